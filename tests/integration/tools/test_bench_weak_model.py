"""``legibility bench weak-model`` end to end with tiny bounds: raw vLLM, then the service on each engine, every
level; the JSON and the PNG it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")


@pytest.mark.slow
@pytest.mark.timeout(600)  # a bound against a hang above the bench's own 400 s: 115 s alone on a slow day here
def test_bench_weak_model_measures_raw_and_both_engines_and_saves_the_run(tmp_path: Path) -> None:
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    command = [sys.executable, "-m", "services.cli", "bench", "weak-model", "--prompts", "8", "--max-new-tokens", "8"]
    command += ["--clients", "1", "--clients", "4", "--batch", "16", "--duration", "1", "--hf"]
    shown = subprocess.run([*command, "--json-out", str(out), "--png", str(png)], capture_output=True, text=True,
                           timeout=400)  # fmt: skip
    assert shown.returncode == 0, shown.stdout[-2000:] + shown.stderr[-2000:]
    assert "stages ran" not in shown.stderr  # the progress line's count matches the stages the bench ran
    assert "Traceback" not in shown.stderr  # both vLLM engines shut down cleanly, none in its __del__ at exit
    saved = json.loads(out.read_text())
    rows = saved["rows"]
    assert [(r["engine"], r["clients"]) for r in rows] == [
        ("raw", 0), ("raw", 1), ("raw", 4), ("vllm", 1), ("vllm", 4), ("hf", 1), ("hf", 4)
    ]  # fmt: skip
    assert rows[0]["requests"] == 16 and rows[0]["ratio_vs_raw"] is None
    for row in rows[1:]:
        assert row["requests"] >= 1 and row["tokens"] > 0
        assert row["seconds"] >= 1.0  # a level runs its whole duration (no request cap given)
        assert row["ratio_vs_raw"] == pytest.approx(row["tokens_per_s"] / rows[0]["tokens_per_s"], abs=1e-3)
    raw_at = {r["clients"]: r["tokens_per_s"] for r in rows if r["engine"] == "raw"}
    for row in rows[3:]:  # the service against vLLM alone at the same concurrency
        assert row["ratio_vs_raw_same_clients"] == pytest.approx(row["tokens_per_s"] / raw_at[row["clients"]], abs=1e-3)
    assert saved["settings"] | {"model": None} == {
        "model": None, "prompts": 8, "max_new_tokens": 8, "clients": [1, 4], "batch": 16, "requests": None,
        "duration_s": 1.0, "warmup_calls_per_client": 2,
    }  # fmt: skip
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
