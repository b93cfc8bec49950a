"""The demo on your own data and checkpoints: a GSM8K-format file, Llama policy and weak model, a Qwen2 verifier.

The checkpoints are built here with random weights, so the numbers mean nothing; what is checked is that the whole
system — Redis, the three services as processes, the task layer, chat-templated prompts, the verifier's rounds —
runs on them as on the toy world and ends with a report.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.test_demo import LEGIBILITY

GSM8K_SAMPLE = Path(__file__).resolve().parents[1] / "data" / "gsm8k_sample.jsonl"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quick_demo_on_a_gsm8k_file_with_own_checkpoints(tmp_path: Path, own_checkpoint: Callable[..., Path]) -> None:
    llama = own_checkpoint("llama", "causal")
    command = [
        LEGIBILITY, "demo", "--quick", "--out", str(tmp_path),
        "--task", "gsm8k", "--data", str(GSM8K_SAMPLE),
        "--policy", str(llama), "--weak", str(llama), "--verifier", str(own_checkpoint("qwen2", "classifier")),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=860)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (root,) = tmp_path.glob("demo-*")
    (run_dir,) = (root / "runs").glob("run-*")
    report = json.loads((root / "report" / "report.json").read_text())
    assert report["counts"]["train_steps"] >= 5  # 4 tandem steps, then the game rounds' steps
    assert len(report["rounds"]) == 2
    for metric in ("eval/solo_accuracy", "eval/handoff_accuracy", "eval/jargon_rate"):
        assert 0 <= report["before_after"][metric]["after"] <= 1
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["kind"] == "state" and "succeeded" in events[-1]["message"]
    task_lines = [e["message"] for e in events if e["kind"] == "log" and e["message"].startswith("task ")]
    assert task_lines and task_lines[0].startswith("task gsm8k: ") and "chat template" in task_lines[0]
    assert (root / "report" / "report.md").is_file()
