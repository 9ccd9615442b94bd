"""A simulation report as JSON, as a Markdown table, and as PNG plots.

The JSON is the dataclasses as they are (every number, the series and the wait CDF
included), so a later comparison needs nothing but ``json.load``. The table holds the
headline numbers per policy; the plots show the containers over time, the cold-start
share and the wait CDF of every policy side by side. Plots use matplotlib's object
API with the Agg canvas (no pyplot, no display, no global state).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from broker_sched.simulator.run import SimulationReport

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COLORS = {"acs": "tab:blue", "sharding": "tab:orange", "keepalive": "tab:green"}


def to_json(report: SimulationReport) -> str:
    return json.dumps(dataclasses.asdict(report), indent=1)


def markdown(report: SimulationReport) -> str:
    header = (
        f"**{report.scenario}**: {report.actions} actions, {report.invokers} invokers x "
        f"{report.slots} slots, {report.duration_s:g} s of {report.load}, "
        f"keep-alive baseline {report.keep_alive_s:g} s\n\n"
    )
    rows = [
        "| policy | activations | cold starts | cold share | wait p50 | wait p99 | "
        "wasted GB·s | containers GB·s | evictions | rejected | timed out | peak containers "
        "| simulated in |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report.policies:
        rows.append(
            f"| {p.policy} | {p.activations:,} | {p.cold_starts:,} | "
            f"{p.cold_start_share:.2%} | {p.wait_p50_ms:.1f} ms | {p.wait_p99_ms:.1f} ms | "
            f"{p.wasted_gb_s:,.0f} | {p.container_gb_s:,.0f} | {p.evictions:,} | "
            f"{p.rejected:,} | {p.timed_out:,} | {p.peak_containers:,} | {p.wall_s:.1f} s |"
        )
    return header + "\n".join(rows) + "\n"


def write(report: SimulationReport, directory: Path) -> list[Path]:
    """Write ``report.json``, ``report.md`` and the three plots into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "report.json", directory / "report.md"]
    written[0].write_text(to_json(report) + "\n")
    written[1].write_text(markdown(report))
    return written + plot(report, directory)


def plot(report: SimulationReport, directory: Path) -> list[Path]:
    from matplotlib.figure import Figure

    paths: list[Path] = []
    containers = Figure(figsize=(8, 3.6))
    ax = containers.subplots()
    for p in report.policies:
        ax.plot(
            [t for t, _ in p.containers],
            [n for _, n in p.containers],
            label=p.policy,
            color=COLORS.get(p.policy),
        )
    ax.set(xlabel="virtual time (s)", ylabel="containers", title=f"{report.scenario}: containers")
    ax.legend()
    paths.append(_save(containers, directory / "containers.png"))

    cold = Figure(figsize=(5, 3.6))
    ax = cold.subplots()
    names = [p.policy for p in report.policies]
    ax.bar(
        names,
        [100 * p.cold_start_share for p in report.policies],
        color=[COLORS.get(name, "tab:gray") for name in names],
    )
    ax.set(ylabel="cold starts (% of runs)", title=f"{report.scenario}: cold-start share")
    paths.append(_save(cold, directory / "cold_starts.png"))

    cdf = Figure(figsize=(7, 3.6))
    ax = cdf.subplots()
    for p in report.policies:
        points = [(max(ms, 1e-3), share) for ms, share in p.wait_cdf]
        ax.step(
            [ms for ms, _ in points],
            [share for _, share in points],
            where="post",
            label=p.policy,
            color=COLORS.get(p.policy),
        )
    ax.set_xscale("log")
    ax.set(
        xlabel="wait before the run starts (ms, log)",
        ylabel="share of runs",
        title=f"{report.scenario}: wait CDF",
    )
    ax.legend()
    paths.append(_save(cdf, directory / "wait_cdf.png"))
    return paths


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path
