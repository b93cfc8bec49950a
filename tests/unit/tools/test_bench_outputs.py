"""What `bench weak-model` saves (JSON rows with both ratios, a PNG) from its measurements, without engines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.tools.bench_weak_model import Measured, Run, draw, table, to_json


def measured_run() -> Run:
    return Run(
        [
            Measured("raw AsyncLLM, 256 requests at once", 256, 8000, 2.0),  # 4000/s
            Measured("raw AsyncLLM, 1 client", 20, 400, 2.0, clients=1),  # 200/s
            Measured("raw AsyncLLM, 64 clients", 256, 8000, 2.5, clients=64),  # 3200/s
            Measured("service, engine vllm, 1 client", 10, 400, 2.5, "vllm", 1),  # 160/s
            Measured("service, engine vllm, 64 clients", 256, 8000, 2.5, "vllm", 64),  # 3200/s
            Measured("service, engine hf, 64 clients", 256, 8000, 1.0, "hf", 64),  # 8000/s
        ]
    )


def test_weak_model_bench_json_has_every_row_and_both_ratios(tmp_path: Path) -> None:
    saved = json.loads(json.dumps(to_json(measured_run(), {"prompts": 128})))
    rows = saved["rows"]
    assert [r["ratio_vs_raw"] for r in rows] == [None, 0.05, 0.8, 0.04, 0.8, 2.0]
    # The service against vLLM alone at the same concurrency: 160/200, 3200/3200, 8000/3200; raw rows have none.
    assert [r["ratio_vs_raw_same_clients"] for r in rows] == [None, None, None, 0.8, 1.0, 2.5]
    assert rows[4]["tokens_per_s"] == pytest.approx(3200.0)
    assert (rows[3]["engine"], rows[3]["clients"], saved["settings"]) == ("vllm", 1, {"prompts": 128})
    assert (rows[0]["engine"], rows[0]["clients"]) == ("raw", 0)


def test_weak_model_bench_table_and_plot(tmp_path: Path) -> None:
    printed = table(measured_run(), "bench")
    assert [c.header for c in printed.columns][-2:] == ["÷ raw all at once", "÷ raw same clients"]
    assert list(printed.columns[-1].cells) == ["", "", "", "0.80", "1.00", "2.50"]
    draw(measured_run(), tmp_path / "weak.png", "bench")
    assert (tmp_path / "weak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ratio_labels_at_the_same_clients_are_pushed_apart_and_the_plot_is_written(tmp_path: Path) -> None:
    from services.tools.bench_plots import Series, draw_throughput, spread

    # Heights in points, in any order; each label at least 11 above the one below it, never lowered.
    assert spread([10.0, 0.0, 10.5, 40.0], 11) == [0.0, 11.0, 22.0, 40.0]
    assert spread([30.0, 0.0], 11) == [0.0, 30.0]
    # Four series meeting at 64 clients, two pairs 1 % apart (as the verifier bench's rows), a long title.
    series = [Series("a", [1, 64], [110, 700]), Series("b", [64], [859]), Series("c", [64], [745])]
    path = tmp_path / "plot.png"
    draw_throughput(path, "t " * 80, ("raw", 749.0), [*series, Series("d", [64], [866])], xlabel="x", ylabel="y",
                    legend="lower right")  # fmt: skip
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
