"""`legibility bench tandem` runs end to end on the bundled models and writes its JSON and PNG (no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_tandem_measures_solo_and_tandem_and_counts_the_work(tmp_path: Path) -> None:
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    command = [sys.executable, "-m", "services.cli", "bench", "tandem", "--prompts", "6", "--max-new-tokens", "24"]
    command += ["--engine", "hf", "--repeats", "1", "--json-out", str(out), "--png", str(png)]
    command += ["--logs", str(tmp_path / "logs")]
    shown = subprocess.run(command, capture_output=True, text=True, timeout=280)
    assert shown.returncode == 0, shown.stdout[-2000:] + shown.stderr[-2000:]
    result = json.loads(out.read_text())
    solo, lockstep, tandem = result["rows"]
    assert [r["mode"] for r in result["rows"]] == ["solo", "tandem, lockstep", "tandem"]
    assert solo["rollouts"] == tandem["rollouts"] == 6
    # The same seeded rollouts either way: lockstep and overlapped scheduling write the same tokens.
    assert lockstep["response_tokens"] == tandem["response_tokens"]
    assert lockstep["weak_tokens"] == tandem["weak_tokens"]
    # Solo: one policy call writes everything, no Continue; tandem: lockstep rounds, the weak model wrote some.
    assert (solo["rounds"], solo["continue_calls"], solo["weak_tokens"]) == (1, 0, 0)
    assert lockstep["rounds"] > 1 and 0 < lockstep["continue_calls"] <= lockstep["rounds"]
    assert tandem["rounds"] > 1 and tandem["continue_calls"] > 0 and tandem["weak_tokens"] > 0
    assert 0 < solo["response_tokens"] <= 6 * 24 and 0 < tandem["response_tokens"] <= 6 * 24
    # Each segment re-sends the rollout's whole prefix; the authors' prefix caches compute only what is new to them.
    assert tandem["policy_prefix_tokens_per_rollout"] > solo["policy_prefix_tokens_per_rollout"]
    assert tandem["policy_computed_prefix_per_rollout"] < 0.6 * tandem["policy_prefix_tokens_per_rollout"]
    assert 0 < tandem["weak_computed_prefix_per_rollout"] < 0.6 * tandem["weak_prefix_tokens_per_rollout"]
    assert solo["policy_computed_prefix_per_rollout"] == solo["policy_prefix_tokens_per_rollout"]
    assert result["tandem_over_solo"]["hf"] == pytest.approx(tandem["seconds"] / solo["seconds"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shown.stdout.strip().splitlines()[-1].startswith("tandem ÷ solo, weak model on hf: ")
