"""A scenario's report: JSON for machines, Markdown for people, PNG plots for both.

Scenarios fill a :class:`Report` with plain data; :func:`write_report` writes
``results.json``, ``report.md`` and one PNG per figure into the output directory.
Targets are reported, never asserted: a miss says by how much and why, so a slow run
on a busy machine still produces a useful report.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from broker_sched.bench.plots import Figure, render

MISSING = "-"


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""


@dataclass
class Target:
    """A goal a scenario is held to (docs/experiments.md says why each): ``met`` is None
    when the run could not measure it."""

    name: str
    goal: str
    actual: float | None
    met: bool | None
    why: str = ""


def at_least(name: str, actual: float | None, goal: float, why_missed: str) -> Target:
    return _target(
        name, f">= {goal:g}", actual, goal, actual is not None and actual >= goal, why_missed
    )


def at_most(name: str, actual: float | None, goal: float, why_missed: str) -> Target:
    return _target(
        name, f"<= {goal:g}", actual, goal, actual is not None and actual <= goal, why_missed
    )


def _target(
    name: str, goal_text: str, actual: float | None, goal: float, met: bool, why_missed: str
) -> Target:
    if actual is None:
        return Target(name, goal_text, None, None, "not measured: " + why_missed)
    if met:
        return Target(name, goal_text, actual, True)
    off = abs(actual - goal) / goal * 100 if goal else float("inf")
    return Target(name, goal_text, actual, False, f"missed by {off:.0f}% — {why_missed}")


@dataclass
class Report:
    scenario: str
    title: str
    quick: bool
    summary: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=lambda: machine())
    generated_at: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "title": self.title,
            "quick": self.quick,
            "generated_at": self.generated_at,
            "machine": self.machine,
            **self.data,
            "targets": [asdict(target) for target in self.targets],
            "figures": [f"{figure.name}.png" for figure in self.figures],
            "notes": self.notes,
        }


def machine() -> dict[str, Any]:
    """Where the numbers come from: they mean little without the machine and its load."""
    memory_gib = None
    if hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    load = [round(value, 2) for value in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {
        "cpus": os.cpu_count(),
        "memory_gib": memory_gib,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "load_average_at_end": load,
    }


def write_report(report: Report, directory: Path) -> list[Path]:
    """Write results.json, report.md and the PNGs; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [render(figure, directory) for figure in report.figures]
    results = directory / "results.json"
    results.write_text(json.dumps(report.to_json(), indent=1, default=str) + "\n")
    markdown = directory / "report.md"
    markdown.write_text(to_markdown(report))
    return [results, markdown, *written]


def to_markdown(report: Report) -> str:
    m = report.machine
    lines = [
        f"# {report.title}",
        "",
        f"Generated {report.generated_at} on {m['cpus']} CPUs, {m['memory_gib']} GiB "
        f"({m['platform']}, Python {m['python']}); load average at the end: "
        f"{m['load_average_at_end']}."
        + (" **Quick run**: short cells, numbers are a smoke test only." if report.quick else ""),
        "",
    ]
    if report.summary:
        lines += [report.summary, ""]
    if report.targets:
        lines += ["## Targets", ""]
        lines += markdown_table(
            ["target", "goal", "actual", "met", "why"],
            [[t.name, t.goal, t.actual, _met(t.met), t.why] for t in report.targets],
        )
        lines.append("")
    for table in report.tables:
        lines += [f"## {table.title}", ""]
        if table.note:
            lines += [table.note, ""]
        lines += markdown_table(table.columns, table.rows)
        lines.append("")
    if report.figures:
        lines += ["## Plots", ""]
        lines += [f"![{figure.title}]({figure.name}.png)" for figure in report.figures]
        lines.append("")
    if report.notes:
        lines += ["## Notes", ""]
        lines += [f"- {note}" for note in report.notes]
        lines.append("")
    return "\n".join(lines)


def markdown_table(columns: list[str], rows: list[list[Any]]) -> list[str]:
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
        *("| " + " | ".join(cell(value) for value in row) + " |" for row in rows),
    ]


def cell(value: Any) -> str:
    """A table cell: numbers with sensible precision, nothing as a dash."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return MISSING
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:,.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if magnitude >= 0.001 or value == 0 else f"{value:.2e}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _met(met: bool | None) -> str:
    return MISSING if met is None else ("yes" if met else "**no**")
