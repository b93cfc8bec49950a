"""report.py on a synthetic metrics.jsonl: a tandem phase, two verifier rounds, a run killed mid-write."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from services.learner.runs.report import read_events, write_report

HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

FIRST_EVAL = {
    "eval/solo_accuracy": 0.3125,
    "eval/sampled_accuracy": 0.25,
    "eval/handoff_accuracy": 0.1875,
    "eval/jargon_rate": 0.84375,
    "eval/legibility_ce": 3.25,
    "eval/mean_solution_chars": 240.0,
}
LAST_EVAL = {
    "eval/solo_accuracy": 0.5625,
    "eval/sampled_accuracy": 0.5,
    "eval/handoff_accuracy": 0.4375,
    "eval/jargon_rate": 0.125,
    "eval/legibility_ce": 2.0,
    "eval/mean_solution_chars": 180.0,
    "eval/sneaky_fool_rate": 0.0625,
    "eval/verifier_auc": 0.875,
    "eval/verifier_version": 2.0,
}
GAME_EVAL_ROUND0 = {"eval/sneaky_fool_rate": 0.375, "eval/verifier_auc": 0.71875, "eval/verifier_version": 1.0}


def _line(kind: str, step: int, round_: int, metrics: dict[str, float], message: str = "") -> str:
    event = {"kind": kind, "step": step, "round": round_, "metrics": metrics, "message": message}
    return json.dumps(event | {"time": 1_700_000_000.0 + 6 * step})


def _train(step: int, round_: int, phase: str, version: float | None = None) -> str:
    metrics = {
        "train/reward": 0.2 + 0.01 * step,
        "train/accuracy": 0.3 + 0.005 * step,
        "train/jargon_rate": max(0.0, 0.9 - 0.02 * step),
        "train/senior_token_frac": 0.5,
        "train/loss": 0.1,
    }
    if version is not None:
        metrics["train/verifier_version"] = version
    return _line("train", step, round_, metrics, phase)


def _mid_eval(step: int) -> dict[str, float]:
    return {k: (FIRST_EVAL[k] + LAST_EVAL[k]) / 2 for k in FIRST_EVAL}


def write_tandem(lines: list[str]) -> None:
    lines.append(_line("state", 0, 0, {}, "started"))
    lines.append(_line("eval", 0, 0, FIRST_EVAL))
    for step in range(1, 21):
        lines.append(_train(step, 0, "tandem"))
        if step == 10:
            lines.append(_line("eval", 10, 0, _mid_eval(10)))


def write_game(lines: list[str]) -> None:
    for round_, version in ((0, 1.0), (1, 2.0)):
        start = 20 + 10 * round_
        lines.append(_line("round", start, round_, {"verifier_version": version, "verifier_auc": 0.7 + 0.1 * round_}))
        lines.append(_line("round", start, round_, {"verifier_version": version, "verifier_wait_s": 1.5 + round_}))
        aucs = {f"verifier_auc_round{r}": 0.6 + 0.05 * r + 0.1 * round_ for r in range(round_ + 1)}
        lines.append(_line("round", start, round_, {"verifier_version": version, **aucs}))
        attack = {"attack_steps_to_exploit": 3.0 + 3 * round_, "attack_exploited": float(round_ == 0)}
        lines.append(_line("round", start, round_, {"verifier_version": version, **attack}))
        for step in range(start + 1, start + 11):
            lines.append(_train(step, round_, "game", version))
        last = round_ == 1
        lines.append(_line("eval", start + 10, round_, LAST_EVAL if last else _mid_eval(30) | GAME_EVAL_ROUND0))


@pytest.fixture
def game_run(tmp_path: Path) -> Path:
    lines: list[str] = []
    write_tandem(lines)
    lines.append(_line("eval", 20, 0, _mid_eval(20)))
    write_game(lines)
    truncated = _train(41, 2, "game")[:37]  # the run was killed while writing its next event
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n" + truncated)
    return tmp_path


@pytest.fixture
def tandem_run(tmp_path: Path) -> Path:
    lines: list[str] = []
    write_tandem(lines)
    lines.append(_line("eval", 20, 0, _mid_eval(20)))
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def linked_pngs(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", markdown)


def test_truncated_last_line_is_skipped(game_run: Path) -> None:
    events = read_events(game_run / "metrics.jsonl")
    assert events[-1].kind == "eval" and events[-1].step == 40
    assert sum(e.kind == "train" for e in events) == 40


def test_before_after_are_first_and_last_evaluation(game_run: Path) -> None:
    report = write_report(game_run, "synthetic", {"mode": "tandem_game", "steps": 20, "game": {"rounds": 2}})
    table = report.before_after
    for name in ("eval/solo_accuracy", "eval/sampled_accuracy", "eval/handoff_accuracy", "eval/jargon_rate"):
        assert (table[name].before, table[name].after) == (FIRST_EVAL[name], LAST_EVAL[name])
        assert (table[name].before_step, table[name].after_step) == (0, 40)
    assert (table["eval/legibility_ce"].before, table["eval/legibility_ce"].after) == (3.25, 2.0)
    # Game metrics first appear in the round-0 evaluation at step 30.
    fool = table["eval/sneaky_fool_rate"]
    assert (fool.before, fool.after, fool.before_step) == (0.375, 0.0625, 30)
    assert "eval/mean_solution_chars" not in table
    saved = json.loads((game_run / "report.json").read_text())
    assert saved["before_after"]["eval/jargon_rate"]["before"] == 0.84375
    assert saved["before_after"]["eval/jargon_rate"]["after"] == 0.125
    assert saved["first_eval"]["step"] == 0 and saved["last_eval"]["metrics"] == LAST_EVAL
    assert saved["counts"] == {"train_steps": 40, "evaluations": 5, "rounds": 2, "events": 54}
    assert [r["metrics"]["verifier_wait_s"] for r in saved["rounds"]] == [1.5, 2.5]
    assert saved["wall_seconds"] == 240.0


def test_markdown_tables(game_run: Path) -> None:
    report = write_report(game_run, "Synthetic run", {"mode": "tandem_game", "steps": 20}, wall_seconds=3723.0)
    md = report.markdown.read_text()
    assert md.startswith("# Synthetic run\n")
    assert "**What ran:** tandem_game run: 20 of 20 tandem steps, 20 game steps in 2 verifier rounds" in md
    assert "| solo accuracy (greedy) | 31.2% | 56.2% | +25.0 pp |" in md
    assert "| jargon rate (greedy) | 84.4% | 12.5% | -71.9 pp |" in md
    assert "| legibility CE (nats) | 3.250 | 2.000 | -1.250 |" in md
    assert "| sneaky fool rate | 37.5% (step 30) | 6.2% | -31.2 pp |" in md
    assert "| verifier AUC | 0.719 (step 30) | 0.875 | +0.156 |" in md
    assert "## Verifier rounds" in md
    # round | verifier | AUC | on base data | on round-0 data | on its own round's | steps to exploit | fool | helpful |
    # best-of-2 vs sneaky | solo | wait
    assert "| 0 | v1 | 0.700 | – | 0.600 | 0.600 | 3 | 37.5% | – | – | 43.8% | 1.5 |" in md
    assert "| 1 | v2 | 0.800 | – | 0.700 | 0.750 | > 5 | 6.2% | – | – | 56.2% | 2.5 |" in md
    assert "**Wall time:** 1 h 02 min 03 s" in md


def test_linked_plots_are_png_files(game_run: Path) -> None:
    report = write_report(game_run, "synthetic")
    links = linked_pngs(report.markdown.read_text())
    assert links == [p.name for p in report.plots]
    for name in links:
        data = (game_run / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1024


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed")
def test_game_run_draws_every_plot(game_run: Path) -> None:
    report = write_report(game_run, "synthetic")
    expected = ["accuracy", "jargon_rate", "legibility", "game", "verifier_version", "reward", "rounds"]
    assert [p.stem for p in report.plots] == expected


def test_tandem_run_has_no_game_section(tandem_run: Path) -> None:
    report = write_report(tandem_run, "tandem only", {"mode": "tandem", "steps": 100})
    md = report.markdown.read_text()
    assert not (tandem_run / "game.png").exists()
    assert "game.png" not in md and "Verifier rounds" not in md and "sneaky" not in md
    assert "20 of 100 tandem steps, 3 evaluations (last at step 20)" in md
    if HAS_MATPLOTLIB:
        assert [p.stem for p in report.plots] == ["accuracy", "jargon_rate", "legibility", "reward"]
    assert report.rounds == []


def test_single_evaluation(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(_line("eval", 0, 0, FIRST_EVAL) + "\n")
    report = write_report(tmp_path, "one eval")
    jargon = report.before_after["eval/jargon_rate"]
    assert (jargon.before, jargon.after, jargon.change) == (0.84375, 0.84375, 0.0)
    assert "| jargon rate (greedy) | 84.4% | 84.4% | +0.0 pp |" in report.markdown.read_text()
    assert report.wall_seconds is None


def test_summary_lines_mention_jargon_rate(game_run: Path) -> None:
    lines = write_report(game_run, "synthetic").summary_lines()
    jargon = [line for line in lines if line.startswith("jargon rate")]
    assert jargon == ["jargon rate (greedy) 84.4% → 12.5% (-71.9 pp)"]
    assert any("2 verifier rounds" in line for line in lines)


def test_nan_metric_and_path_options_give_strict_json(tmp_path: Path) -> None:
    nan_eval = FIRST_EVAL | {"eval/legibility_ce": float("nan")}
    (tmp_path / "metrics.jsonl").write_text(
        _line("eval", 0, 0, nan_eval) + "\n" + _line("eval", 10, 0, LAST_EVAL) + "\n"
    )
    report = write_report(tmp_path, "nan", {"policy_model": tmp_path})
    saved = json.loads((tmp_path / "report.json").read_text(), parse_constant=pytest.fail)
    assert saved["first_eval"]["metrics"]["eval/legibility_ce"] is None
    assert saved["options"] == {"policy_model": str(tmp_path)}
    # The CE has no value at step 0, so its "before" is the first finite one.
    ce = report.before_after["eval/legibility_ce"]
    assert (ce.before, ce.after, ce.before_step) == (2.0, 2.0, 10)


def test_missing_log_gives_an_empty_report(tmp_path: Path) -> None:
    report = write_report(tmp_path, "empty")
    assert report.before_after == {} and report.plots == []
    assert "No evaluation was recorded." in report.markdown.read_text()
