"""A finished (or killed) run's report: report.json, report.md and PNG plots, all read back from metrics.jsonl.

The report is rebuilt from the event log alone, so it can be written for a run that crashed, was stopped, or ran on
another machine; ``options`` and ``wall_seconds`` only add what the log cannot know.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.learner.runs.events import RunEvent, read_events

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyMetric:
    name: str
    label: str
    percent: bool
    """A rate in [0, 1]: shown as a percentage, its change in percentage points."""


KEY_METRICS = (
    KeyMetric("eval/solo_accuracy", "solo accuracy (greedy)", True),
    KeyMetric("eval/sampled_accuracy", "sampled accuracy (T = 1)", True),
    KeyMetric("eval/handoff_accuracy", "handoff accuracy", True),
    KeyMetric("eval/jargon_rate", "jargon rate (greedy)", True),
    KeyMetric("eval/sampled_jargon_rate", "jargon rate (T = 1)", True),
    KeyMetric("eval/legibility_ce", "legibility CE (nats)", False),
    KeyMetric("eval/sneaky_fool_rate", "sneaky fool rate", True),
    KeyMetric("eval/verifier_auc", "verifier AUC", False),
)


@dataclass(frozen=True)
class BeforeAfter:
    label: str
    percent: bool
    before: float
    after: float
    before_step: int
    after_step: int

    @property
    def change(self) -> float:
        return self.after - self.before

    def fmt(self, value: float) -> str:
        return f"{100 * value:.1f}%" if self.percent else f"{value:.3f}"

    def fmt_change(self) -> str:
        return f"{100 * self.change:+.1f} pp" if self.percent else f"{self.change:+.3f}"


@dataclass(frozen=True)
class RoundSummary:
    round: int
    step: int
    metrics: dict[str, float]
    """The round's events merged: verifier_version, verifier_auc, verifier_wait_s, round_samples, ..."""


@dataclass
class Report:
    title: str
    markdown: Path
    json: Path
    plots: list[Path]
    before_after: dict[str, BeforeAfter]
    rounds: list[RoundSummary] = field(default_factory=list)
    wall_seconds: float | None = None

    def summary_lines(self) -> list[str]:
        """A few console lines: the key before → after changes, the rounds and where the report is."""
        lines = [
            f"{m.label} {m.fmt(m.before)} → {m.fmt(m.after)} ({m.fmt_change()})" for m in self.before_after.values()
        ]
        if self.rounds:
            lines.append(f"{len(self.rounds)} verifier rounds")
        if self.wall_seconds is not None:
            lines.append(f"wall time {format_duration(self.wall_seconds)}")
        lines.append(f"report: {self.markdown}")
        return lines


def by_step(events: list[RunEvent], kind: str) -> list[RunEvent]:
    """One event per step, the last one: a resumed run re-emits the steps after its checkpoint."""
    latest = {e.step: e for e in events if e.kind == kind}
    return [latest[s] for s in sorted(latest)]


def series(events: list[RunEvent], name: str) -> list[tuple[int, float]]:
    return [(e.step, e.metrics[name]) for e in events if name in e.metrics and math.isfinite(e.metrics[name])]


def before_after(evals: list[RunEvent]) -> dict[str, BeforeAfter]:
    """First and last finite value of each key metric (game metrics may appear only in later evaluations)."""
    table: dict[str, BeforeAfter] = {}
    for metric in KEY_METRICS:
        points = series(evals, metric.name)
        if points:
            (s0, v0), (s1, v1) = points[0], points[-1]
            table[metric.name] = BeforeAfter(metric.label, metric.percent, v0, v1, s0, s1)
    return table


def summarize_rounds(events: list[RunEvent]) -> list[RoundSummary]:
    """Each round's events merged, plus the evaluation that closed it (its metrics as ``end/<name>``)."""
    merged: dict[int, RoundSummary] = {}
    for e in events:
        if e.kind == "round":
            old = merged.get(e.round)
            step = old.step if old else e.step
            merged[e.round] = RoundSummary(e.round, step, {**(old.metrics if old else {}), **e.metrics})
    for e in events:  # the last evaluation of each round's game steps closes it
        if e.kind == "eval" and e.round in merged and e.step > merged[e.round].step:
            closing = {f"end/{k.removeprefix('eval/')}": v for k, v in e.metrics.items()}
            merged[e.round].metrics.update(closing)
    return [merged[r] for r in sorted(merged)]


ROUND_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("verifier", "verifier_version", "v{:.0f}"),
    ("held-out AUC", "verifier_auc", "{:.3f}"),
    ("AUC, base data", "verifier_auc_base", "{:.3f}"),
    ("AUC, round-0 data", "verifier_auc_round0", "{:.3f}"),
    ("AUC, this round's data", "verifier_auc_this_round", "{:.3f}"),
    ("steps to exploit", "attack_steps_to_exploit", "{:.0f}"),
    ("sneaky fool rate (end)", "end/sneaky_fool_rate", "{:.1%}"),
    ("helpful accuracy (end)", "end/helpful_accuracy", "{:.1%}"),
    ("best-of-2 vs sneaky (end)", "end/best_of_2_vs_sneaky_accuracy", "{:.1%}"),
    ("solo accuracy (end)", "end/solo_accuracy", "{:.1%}"),
    ("wait for service (s)", "verifier_wait_s", "{:.1f}"),
)
"""The rounds table: header, metric, format."""


def _round_cell(r: RoundSummary, metric: str, fmt: str) -> str:
    metrics = dict(r.metrics)
    if metric == "verifier_auc_this_round":
        metric = f"verifier_auc_round{r.round}"
    value = metrics.get(metric)
    if value is None or not math.isfinite(value):
        return "–"
    cell = fmt.format(value)
    if metric == "attack_steps_to_exploit" and metrics.get("attack_exploited") == 0.0:
        cell = f"> {value - 1:.0f}"  # the attacker did not win within its budget
    return cell


def draw_round_plot(run_dir: Path, rounds: list[RoundSummary]) -> Path | None:
    """rounds.png: the verifier's held-out AUC, the end-of-round fool rate and accuracy, and steps to exploit."""
    if len(rounds) < 1:
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    xs = [r.round for r in rounds]
    for metric, label in (
        ("verifier_auc", "verifier held-out AUC"),
        ("end/sneaky_fool_rate", "sneaky fool rate (end of round)"),
        ("end/helpful_accuracy", "helpful accuracy (end of round)"),
    ):
        points = [(r.round, r.metrics[metric]) for r in rounds if metric in r.metrics]
        if points:
            left.plot(*zip(*points, strict=True), marker="o", label=label)
    left.set_title("Verifier and prover by round", fontsize=11)
    left.set_xlabel("round")
    left.set_xticks(xs)
    left.set_ylim(0, 1.05)
    left.grid(alpha=0.3)
    left.legend(fontsize="small")
    attacked = [r for r in rounds if "attack_steps_to_exploit" in r.metrics]
    if attacked:
        won = ["tab:red" if r.metrics.get("attack_exploited") else "tab:grey" for r in attacked]
        right.bar([r.round for r in attacked], [r.metrics["attack_steps_to_exploit"] for r in attacked], color=won)
    right.set_title("Sneaky-only attack: steps to exploit (grey: not within budget)", fontsize=10)
    right.set_xlabel("round")
    right.set_xticks(xs)
    right.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path = run_dir / "rounds.png"
    fig.savefig(path, format="png")
    return path


def format_duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    return f"{minutes} min {secs:02d} s" if minutes else f"{seconds:.1f} s"


def _finite(value: Any) -> Any:
    """Strict JSON has no NaN: a metric the run could not compute becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# ---- plots -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    kind: str
    metric: str
    label: str
    thin: bool = False


@dataclass(frozen=True)
class Plot:
    file: str
    title: str
    ylabel: str
    lines: tuple[Line, ...]
    percent: bool = False
    steps: bool = False
    """Draw as a step function: the value holds until the next point (verifier versions)."""


PLOTS = (
    Plot(
        "accuracy.png",
        "Evaluation accuracy",
        "accuracy",
        (
            Line("eval", "eval/solo_accuracy", "solo (greedy)"),
            Line("eval", "eval/sampled_accuracy", "sampled"),
            Line("eval", "eval/handoff_accuracy", "handoff to the weak model"),
        ),
        percent=True,
    ),
    Plot(
        "jargon_rate.png",
        "Jargon rate",
        "share of solutions with jargon",
        (
            Line("eval", "eval/jargon_rate", "evaluation, greedy"),
            Line("eval", "eval/sampled_jargon_rate", "evaluation, T = 1"),
            Line("train", "train/jargon_rate", "training batch (joint solutions)", thin=True),
        ),
        percent=True,
    ),
    Plot(
        "legibility.png",
        "Legibility: weak model's cross-entropy on the policy's solutions (lower = more legible)",
        "nats per token",
        (Line("eval", "eval/legibility_ce", "legibility CE"),),
    ),
    Plot(
        "game.png",
        "Prover–verifier game",
        "rate / AUC",
        (
            Line("eval", "eval/sneaky_fool_rate", "sneaky fool rate"),
            Line("eval", "eval/verifier_auc", "verifier AUC"),
        ),
    ),
    Plot(
        "verifier_version.png",
        "Verifier version in use",
        "verifier version",
        (Line("train", "train/verifier_version", "training"), Line("eval", "eval/verifier_version", "evaluation")),
        steps=True,
    ),
    Plot(
        "reward.png",
        "Training reward and senior-token share",
        "value",
        (Line("train", "train/reward", "reward"), Line("train", "train/senior_token_frac", "senior token fraction")),
    ),
)


def draw_plots(run_dir: Path, by_kind: dict[str, list[RunEvent]], round_steps: list[int]) -> list[Path]:
    """Write each plot with data; returns their paths ([] when matplotlib is not installed)."""
    try:
        # Imported here: matplotlib takes ~0.5 s to import, and only report writing needs it.
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import PercentFormatter
    except ImportError:
        log.warning("matplotlib is not installed; the report has no plots")
        return []
    written: list[Path] = []
    for plot in PLOTS:
        data = [(line, series(by_kind[line.kind], line.metric)) for line in plot.lines]
        if not any(points for _, points in data):
            continue
        # A bare Figure on an Agg canvas, not pyplot: no global backend switch, no figure registry to leak.
        fig = Figure(figsize=(8, 4.5), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for line, points in data:
            if points:
                xs, ys = zip(*points, strict=True)
                style = {"linewidth": 0.8, "alpha": 0.6} if line.thin else {"linewidth": 1.8, "marker": "o", "ms": 4}
                ax.plot(xs, ys, label=line.label, drawstyle="steps-post" if plot.steps else "default", **style)
        for i, step in enumerate(round_steps):
            ax.axvline(
                step, color="grey", linestyle=":", linewidth=1, label="verifier round" if i == 0 else "_nolegend_"
            )
        ax.set_title(plot.title, fontsize=11)
        ax.set_xlabel("training step")
        ax.set_ylabel(plot.ylabel)
        if plot.percent:
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small", loc="best")
        fig.tight_layout()
        path = run_dir / plot.file
        fig.savefig(path, format="png")
        written.append(path)
    return written


# ---- report ------------------------------------------------------------------------------------------------------


def _what_ran(options: dict[str, Any] | None, train: list[RunEvent], evals: list[RunEvent], rounds: int) -> str:
    options = options or {}
    tandem = sum(e.message == "tandem" for e in train)
    game = sum(e.message == "game" for e in train)
    planned = options.get("steps") if options.get("mode") in ("tandem", "tandem_game") else None
    parts = (
        [f"{tandem} of {planned} tandem steps" if planned else f"{tandem} tandem steps"] if tandem or planned else []
    )
    if game or rounds:
        planned_rounds = (options.get("game") or {}).get("rounds")
        of = f" of {planned_rounds}" if planned_rounds else ""
        parts.append(f"{game} game steps in {rounds}{of} verifier rounds")
    parts.append(f"{len(evals)} evaluations" + (f" (last at step {evals[-1].step})" if evals else ""))
    name = f" `{options['name']}`" if options.get("name") else ""
    mode = options.get("mode", "")
    return f"**What ran:** {mode + ' ' if mode else ''}run{name}: " + ", ".join(parts) + "."


def _markdown(
    title: str, what: str, table: dict[str, BeforeAfter], rounds: list[RoundSummary], wall: str, plots: list[Path]
) -> str:
    out = [f"# {title}", "", what, ""]
    out += ["## Before → after", ""]
    if table:
        first = min(m.before_step for m in table.values())
        last = max(m.after_step for m in table.values())
        out += [f"First and last evaluation (step {first} → step {last}).", ""]
        out += ["| metric | before | after | change |", "|---|---:|---:|---:|"]
        for m in table.values():
            before = m.fmt(m.before) + (f" (step {m.before_step})" if m.before_step != first else "")
            after = m.fmt(m.after) + (f" (step {m.after_step})" if m.after_step != last else "")
            out.append(f"| {m.label} | {before} | {after} | {m.fmt_change()} |")
    else:
        out.append("No evaluation was recorded.")
    if rounds:
        out += ["", "## Verifier rounds", ""]
        out += ["| round | " + " | ".join(h for h, _, _ in ROUND_COLUMNS) + " |"]
        out += ["|---:|" + "---:|" * len(ROUND_COLUMNS)]
        for r in rounds:
            out.append(f"| {r.round} | " + " | ".join(_round_cell(r, m, f) for _, m, f in ROUND_COLUMNS) + " |")
    out += ["", f"**Wall time:** {wall}", "", "## Plots", ""]
    out += [f"![{p.stem}]({p.name})" for p in plots] or ["_No plots: matplotlib is not installed or nothing to plot._"]
    return "\n".join(out) + "\n"


def write_report(
    run_dir: Path,
    title: str,
    options: dict[str, Any] | None = None,
    wall_seconds: float | None = None,
    out_dir: Path | None = None,
) -> Report:
    """Read run_dir/metrics.jsonl; write report.json, report.md and the plots into out_dir (default run_dir).

    options: the run's options as a dict (e.g. ``dataclasses.asdict(RunOptions)``), copied into report.json.
    wall_seconds: the run's wall time; without it, the span between the first and last event.
    """
    events = read_events(run_dir / "metrics.jsonl")
    by_kind = {kind: by_step(events, kind) for kind in ("train", "eval")}
    train, evals = by_kind["train"], by_kind["eval"]
    rounds = summarize_rounds(events)
    timed = [e.time for e in events if e.time > 0]
    if wall_seconds is None and len(timed) > 1:
        wall_seconds = max(timed) - min(timed)
    table = before_after(evals)
    out_dir = out_dir or run_dir
    plots = draw_plots(out_dir, by_kind, sorted({r.step for r in rounds}))
    if (round_plot := draw_round_plot(out_dir, rounds)) is not None:
        plots.append(round_plot)
    wall = format_duration(wall_seconds) if wall_seconds is not None else "unknown"
    md_path, json_path = out_dir / "report.md", out_dir / "report.json"
    md_path.write_text(_markdown(title, _what_ran(options, train, evals, len(rounds)), table, rounds, wall, plots))
    content = {
        "title": title,
        "options": options,
        "wall_seconds": wall_seconds,
        "counts": {"train_steps": len(train), "evaluations": len(evals), "rounds": len(rounds), "events": len(events)},
        "first_eval": {"step": evals[0].step, "metrics": evals[0].metrics} if evals else None,
        "last_eval": {"step": evals[-1].step, "metrics": evals[-1].metrics} if evals else None,
        "rounds": [{"round": r.round, "step": r.step, "metrics": r.metrics} for r in rounds],
        "before_after": {
            name: {"label": m.label, "percent": m.percent, "before": m.before, "after": m.after, "change": m.change}
            | {"before_step": m.before_step, "after_step": m.after_step}
            for name, m in table.items()
        },
        "plots": [p.name for p in plots],
    }
    json_path.write_text(json.dumps(_finite(content), indent=2, default=str) + "\n")
    return Report(title, md_path, json_path, plots, table, rounds, wall_seconds)
