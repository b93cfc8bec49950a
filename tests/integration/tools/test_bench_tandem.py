"""`legibility bench tandem` runs end to end on the bundled models and writes its JSON and PNG (no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.common.cpu_cores import available_cores


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_tandem_measures_solo_and_tandem_and_counts_the_work(tmp_path: Path) -> None:
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    command = [sys.executable, "-m", "services.cli", "bench", "tandem", "--prompts", "6", "--max-new-tokens", "24"]
    command += ["--engine", "hf", "--repeats", "1", "--json-out", str(out), "--png", str(png)]
    command += ["--logs", str(tmp_path / "logs"), "--no-agent"]
    shown = subprocess.run(command, capture_output=True, text=True, timeout=280)
    assert shown.returncode == 0, shown.stdout[-2000:] + shown.stderr[-2000:]
    assert "stages ran" not in shown.stderr  # the progress line's count matches the stages the bench ran
    result = json.loads(out.read_text())
    if len(available_cores()) >= 2:  # by default the policy and the weak-model service get half the cores each
        cores = result["cpu_cores"]
        assert cores["policy"] and cores["weak_model"]
        assert set(cores["policy"].split(",")).isdisjoint(cores["weak_model"].split(","))
    solo, lockstep, tandem = result["rows"]
    assert [r["mode"] for r in result["rows"]] == ["solo", "tandem, lockstep", "tandem"]
    assert solo["rollouts"] == tandem["rollouts"] == 6
    # The same seeded rollouts either way: lockstep and overlapped scheduling write the same tokens.
    assert lockstep["response_tokens"] == tandem["response_tokens"]
    assert lockstep["weak_tokens"] == tandem["weak_tokens"]
    # Solo: the policy's loop decodes every rollout together, one step per token, no Continue; tandem: lockstep
    # rounds, the weak model wrote some.
    assert 1 < solo["rounds"] <= 24 and (solo["continue_calls"], solo["weak_tokens"]) == (0, 0)
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
    assert shown.stdout.strip().splitlines()[-1].startswith("tandem ÷ solo, learner path, weak model on hf: ")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_bench_tandem_agent_path_runs_openrlhfs_agent_over_a_vllm_policy(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    # Up to 100 new tokens (the toy solutions end sooner): the third prompt (101 tokens) then fills the policy's
    # 192-token window, where a budget that forgets the lookahead's position makes the agent cut the prompt.
    command = [sys.executable, "-m", "services.cli", "bench", "tandem", "--prompts", "4", "--max-new-tokens", "100"]
    command += ["--engine", "hf", "--repeats", "1", "--json-out", str(out), "--logs", str(tmp_path / "logs")]
    shown = subprocess.run([*command, "--agent"], capture_output=True, text=True, timeout=380)
    assert shown.returncode == 0, shown.stdout[-2000:] + shown.stderr[-2000:]
    assert "stages ran" not in shown.stderr
    assert "truncated" not in shown.stderr  # the agent path's prompts are the learner path's, whole
    result = json.loads(out.read_text())
    agent = {r["mode"]: r for r in result["rows"] if r["path"] == "openrlhf agent"}
    assert sorted(agent) == ["solo", "tandem"]
    solo, tandem = agent["solo"], agent["tandem"]
    assert solo["rollouts"] == tandem["rollouts"] == 4
    # Solo: one policy generate per rollout (more only where a stop string fired early), no weak model at all.
    assert solo["rounds"] >= 4 and (solo["continue_calls"], solo["weak_tokens"]) == (0, 0)
    # Tandem: many policy calls, Continue calls counted by the service's own metrics, weak tokens in the rollouts.
    assert tandem["rounds"] > solo["rounds"] and tandem["continue_calls"] > 0 and tandem["weak_tokens"] > 0
    assert 0 < tandem["response_tokens"] <= 4 * 100 and 0 < solo["response_tokens"] <= 4 * 100
    # vLLM's prefix caching serves the policy's repeated prefixes; the hf weak engine's prefix cache the weak ones.
    assert tandem["policy_computed_prefix_per_rollout"] < 0.6 * tandem["policy_prefix_tokens_per_rollout"]
    assert 0 < tandem["weak_computed_prefix_per_rollout"] < 0.6 * tandem["weak_prefix_tokens_per_rollout"]
    assert result["agent_tandem_over_solo"]["hf"] == pytest.approx(tandem["seconds"] / solo["seconds"])
    assert "tandem ÷ solo, openrlhf agent path, weak model on hf" in shown.stdout
    assert "Traceback" not in shown.stderr  # the policy's AsyncLLM is shut down before exit, not in its __del__
