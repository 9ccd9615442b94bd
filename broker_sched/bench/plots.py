"""PNG plots: values over time with events marked, and bars per scenario cell.

Figures are described as plain data (:class:`TimeFigure`, :class:`BarFigure`) by the
scenarios and drawn here with matplotlib's Agg backend (no display needed), so the
scenarios stay testable without matplotlib and every plot shares one look.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure

EVENT_COLORS = {
    "rebalance_started": "tab:red",
    "rebalance_finished": "tab:green",
    "partitions_resized": "tab:purple",
    "consumer_added": "black",
    "consumer_removed": "dimgray",
    "consumer_restarted": "tab:brown",
    "throttle_on": "tab:orange",
    "throttle_off": "tab:olive",
}
DEFAULT_EVENT_COLOR = "tab:gray"


@dataclass
class Line:
    label: str
    x: list[float]
    y: list[float | None]
    style: str = "-"
    color: str | None = None


@dataclass
class Marker:
    """A vertical line at ``t_s``: an event such as a rebalance or a resize."""

    t_s: float
    kind: str
    label: str = ""


@dataclass
class Panel:
    title: str
    ylabel: str
    lines: list[Line] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    log_y: bool = False
    log_x: bool = False
    shade_until_s: float | None = None
    """Shade ``[0, shade_until_s)``: the warm-up, not counted in the aggregates."""


@dataclass
class TimeFigure:
    name: str
    title: str
    panels: list[Panel]
    columns: int = 1
    xlabel: str = "time since start (s)"


@dataclass
class BarFigure:
    name: str
    title: str
    categories: list[str]
    groups: dict[str, list[float | None]]
    ylabel: str
    log_y: bool = False
    reference: float | None = None
    reference_label: str = ""


Figure = TimeFigure | BarFigure


def render(figure: Figure, directory: Path) -> Path:
    """Draw ``figure`` to ``directory/<name>.png``.

    Uses matplotlib's object API (no pyplot): no global figure state and no backend
    switch, so rendering is safe inside any host process.
    """
    from matplotlib.figure import Figure as MplFigure

    path = directory / f"{figure.name}.png"
    if isinstance(figure, TimeFigure):
        columns = max(1, min(figure.columns, len(figure.panels)))
        rows = max(1, math.ceil(len(figure.panels) / columns))
        canvas = MplFigure(figsize=(6.0 * columns, 3.0 * rows + 0.4))
        _time_figure(canvas, figure, rows, columns)
    else:
        categories = max(1, len(figure.categories) * max(1, len(figure.groups)))
        canvas = MplFigure(figsize=(max(6.0, 0.45 * categories), 4.2))
        _bar_figure(canvas, figure)
    canvas.savefig(path, dpi=100)
    return path


def _time_figure(canvas: MplFigure, figure: TimeFigure, rows: int, columns: int) -> None:
    axes = canvas.subplots(rows, columns, squeeze=False)
    for index, panel in enumerate(figure.panels):
        ax = axes[index // columns][index % columns]
        _draw_panel(ax, panel)
        if index // columns == rows - 1 or index + columns >= len(figure.panels):
            ax.set_xlabel(figure.xlabel)
    for index in range(len(figure.panels), rows * columns):
        axes[index // columns][index % columns].set_visible(False)
    canvas.suptitle(figure.title)
    canvas.tight_layout()


def _draw_panel(ax: Axes, panel: Panel) -> None:
    for line in panel.lines:
        points = [(x, y) for x, y in zip(line.x, line.y, strict=True) if y is not None]
        ax.plot(
            [x for x, _ in points],
            [y for _, y in points],
            line.style,
            label=line.label,
            color=line.color,
            linewidth=1.2,
            markersize=2,
        )
    labelled: set[str] = set()
    for marker in panel.markers:
        color = EVENT_COLORS.get(marker.kind, DEFAULT_EVENT_COLOR)
        label = marker.label or marker.kind
        ax.axvline(
            marker.t_s,
            color=color,
            linestyle="--",
            linewidth=0.9,
            label=label if label not in labelled else None,
        )
        labelled.add(label)
    if panel.shade_until_s:
        ax.axvspan(0, panel.shade_until_s, color="0.92", zorder=0)
    if panel.log_y and any(y for line in panel.lines for y in line.y if y):
        ax.set_yscale("log")
    if panel.log_x:
        ax.set_xscale("log")
    ax.set_title(panel.title, fontsize=9)
    ax.set_ylabel(panel.ylabel)
    ax.grid(True, alpha=0.3)
    if panel.lines or panel.markers:
        ax.legend(fontsize=7, loc="best")


def _bar_figure(canvas: MplFigure, figure: BarFigure) -> None:
    ax = canvas.subplots()
    count = max(1, len(figure.groups))
    width = 0.8 / count
    for index, (name, values) in enumerate(figure.groups.items()):
        xs = [i + (index - (count - 1) / 2) * width for i in range(len(figure.categories))]
        ax.bar(xs, [value or 0.0 for value in values], width=width, label=name)
    ax.set_xticks(range(len(figure.categories)))
    ax.set_xticklabels(figure.categories, rotation=30, ha="right", fontsize=8)
    if figure.log_y and any(v for values in figure.groups.values() for v in values if v):
        ax.set_yscale("log")
    if figure.reference is not None:
        ax.axhline(figure.reference, color="tab:red", linestyle="--", label=figure.reference_label)
    ax.set_ylabel(figure.ylabel)
    ax.set_title(figure.title)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    canvas.tight_layout()
