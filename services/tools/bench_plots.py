"""The benches' throughput plot: rate by concurrent clients, one line per series, the raw rate as a dashed line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Series:
    label: str
    clients: list[int]
    rates: list[float]
    marker: str = "o"


def draw_throughput(
    path: Path, title: str, raw: tuple[str, float], series: list[Series], *, xlabel: str, ylabel: str, legend: str
) -> None:
    """Each point labelled with its ratio to ``raw`` (label, rate); clients on a log-2 axis; saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw_label, raw_rate = raw
    figure, axis = plt.subplots(figsize=(6.5, 3.8))
    axis.axhline(raw_rate, color="black", linestyle="--", label=f"{raw_label} ({raw_rate:.0f})")
    for line in series:
        axis.plot(line.clients, line.rates, marker=line.marker, label=line.label)
        for x, y in zip(line.clients, line.rates, strict=True):
            axis.annotate(f"{y / raw_rate:.2f}", (x, y), textcoords="offset points", xytext=(4, 4))
    clients = sorted({c for line in series for c in line.clients})
    axis.set_xscale("log", base=2)
    axis.set_xticks(clients, [str(c) for c in clients])
    axis.set_xlabel(xlabel)
    axis.set_ylabel(f"{ylabel} (label: ratio to raw)")
    axis.set_ylim(bottom=0)
    axis.set_title(title, fontsize="small")
    axis.legend(fontsize="x-small", loc=legend)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
