"""What ``bench weak-model`` saves (JSON rows with ratios, a PNG) from its measurements, without running engines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.tools.bench_weak_model import Measured, draw, to_json


def test_weak_model_bench_json_has_every_row_and_its_ratio_to_raw(tmp_path: Path) -> None:
    raw = Measured("raw AsyncLLM, 256 requests at once", 256, 8000, 2.0)
    rows = [
        Measured("service, engine vllm, 1 client", 10, 400, 1.0, "vllm", 1),
        Measured("service, engine vllm, 64 clients", 256, 8000, 2.5, "vllm", 64),
        Measured("service, engine hf, 64 clients", 256, 8000, 1.0, "hf", 64),
    ]
    saved = json.loads(json.dumps(to_json(raw, rows, {"prompts": 128})))
    assert [r["ratio_vs_raw"] for r in saved["rows"]] == [None, 0.1, 0.8, 2.0]  # 400/s, 3200/s, 8000/s vs 4000/s
    assert saved["rows"][2]["tokens_per_s"] == pytest.approx(3200.0)
    assert (saved["rows"][1]["engine"], saved["rows"][1]["clients"], saved["settings"]) == ("vllm", 1, {"prompts": 128})
    draw(raw, rows, tmp_path / "weak.png", "bench")
    assert (tmp_path / "weak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
