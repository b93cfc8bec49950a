"""The benches' throughput plot: rate by concurrent clients, one line per series, the raw rate as a dashed line."""

from __future__ import annotations

import textwrap
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
    ratios: dict[int, list[tuple[float, str]]] = defaultdict(list)
    for line in series:
        axis.plot(line.clients, line.rates, marker=line.marker, label=line.label)
        for x, y in zip(line.clients, line.rates, strict=True):
            ratios[x].append((y, f"{y / raw_rate:.2f}"))
    clients = sorted({c for line in series for c in line.clients})
    axis.set_xscale("log", base=2)
    axis.set_xticks(clients, [str(c) for c in clients])
    axis.set_xlabel(xlabel)
    axis.set_ylabel(f"{ylabel} (label: ratio to raw)")
    top = max([raw_rate, *(rate for line in series for rate in line.rates)])
    axis.set_ylim(0, top * 1.15)  # room for the labels of the highest points
    axis.set_title(textwrap.fill(title, 90), fontsize="small")  # a long title would run off the figure
    axis.legend(fontsize="x-small", loc=legend)
    figure.tight_layout()
    _label_ratios(axis, ratios)
    figure.savefig(path, dpi=120)
    plt.close(figure)


LABEL_GAP_PT = 11
"""Least vertical distance between two ratio labels at the same x (series often meet there), in points."""


def spread(heights: list[float], gap: float) -> list[float]:
    """``heights`` sorted, each pushed up to at least ``gap`` above the one below it (labels at one x)."""
    placed: list[float] = []
    for height in sorted(heights):
        placed.append(max(height, placed[-1] + gap) if placed else height)
    return placed


def _label_ratios(axis: Any, ratios: dict[int, list[tuple[float, str]]]) -> None:
    """Each point's ratio to the right of it, pushed up where it would overlap the label below it."""
    low, high = axis.get_ylim()
    points_per_unit = axis.get_window_extent().height * 72 / axis.figure.dpi / (high - low)
    for x, labels in ratios.items():
        ordered = sorted(labels)
        placed = spread([y * points_per_unit for y, _ in ordered], LABEL_GAP_PT)
        for (y, text), at in zip(ordered, placed, strict=True):
            lift = at - y * points_per_unit
            axis.annotate(text, (x, y), textcoords="offset points", xytext=(6, lift - 3), fontsize="small")
