"""The keep-alive trade-off: cold-start share against idle memory, per keep-alive policy.

Every fixed keep-alive trades one for the other: longer keeps more idle containers and
cold-starts less. The curve of fixed values (and no keep-alive at all, its end) is the
frontier a learned policy must beat; :func:`tradeoff` runs the keep-alive baseline
(one container per concurrent call, on a cluster big enough never to constrain it)
with each fixed value and with learned windows, over the same scenario, and reads how
far the learned point lies below the curve: fewer cold starts at its memory, or less
memory at its cold starts (linear interpolation between neighbouring fixed values on a
log memory axis).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from broker_sched.config import KeepAliveSettings, Settings
from broker_sched.simulator.engine import Engine
from broker_sched.simulator.keepalive import KeepAlivePolicy
from broker_sched.simulator.metrics import PolicyReport
from broker_sched.simulator.model import Scenario

FIXED_KEEP_ALIVES_S = (10.0, 60.0, 300.0, 600.0, 1800.0, 3600.0)
COLD_START_WORTHS_S = (100.0, 300.0, 1000.0)
"""Learned windows at these ``keep_alive.cold_start_worth_s``: a curve of their own."""
NO_KEEP_ALIVE_S = 0.0


@dataclass(frozen=True, slots=True)
class TradeoffPoint:
    label: str
    keep_alive_s: float | None
    """The fixed value; None for learned windows."""
    cold_start_share: float
    idle_gb_s: float
    prewarmed: int
    report: PolicyReport


@dataclass(frozen=True, slots=True)
class Tradeoff:
    scenario: str
    functions: int
    activations: int
    fixed: tuple[TradeoffPoint, ...]
    """No keep-alive first, then each fixed value, ascending."""
    learned: tuple[TradeoffPoint, ...]
    """One point per ``cold_start_worth_s``."""
    fewer_cold_starts: tuple[float | None, ...]
    """Per learned point: 1 - its cold-start share / the fixed curve's at its memory
    (None: its memory is outside the curve's range)."""
    less_memory: tuple[float | None, ...]
    """Per learned point: 1 - its idle memory / the fixed curve's at its cold-start share."""


def run_point(
    scenario: Scenario, settings: Settings, policy: KeepAlivePolicy, keep_alive_s: float | None
) -> TradeoffPoint:
    report = Engine(scenario, settings, policy).run()
    return TradeoffPoint(
        policy.name,
        keep_alive_s,
        report.cold_start_share,
        report.wasted_gb_s,
        policy.prewarmed,
        report,
    )


def tradeoff(
    scenario: Scenario,
    settings: Settings,
    *,
    fixed_s: Sequence[float] = FIXED_KEEP_ALIVES_S,
    worths_s: Sequence[float] = COLD_START_WORTHS_S,
    learned: KeepAliveSettings | None = None,
    fallback_s: float = 60.0,
) -> Tradeoff:
    """Run no keep-alive, each fixed value and learned windows at each of ``worths_s``
    (``fallback_s`` for functions with too few idle times) over ``scenario``."""
    base = learned or KeepAliveSettings(policy="learned")
    fixed = tuple(
        run_point(scenario, settings, KeepAlivePolicy(value, name=f"fixed {value:g} s"), value)
        for value in (NO_KEEP_ALIVE_S, *sorted(fixed_s))
    )
    points = tuple(
        run_point(
            scenario,
            settings,
            KeepAlivePolicy(
                fallback_s,
                learned=base.model_copy(update={"cold_start_worth_s": worth_s}),
                name=f"learned {worth_s:g} s",
            ),
            None,
        )
        for worth_s in worths_s
    )
    return Tradeoff(
        scenario.name,
        len(scenario.actions),
        fixed[0].report.activations,
        fixed,
        points,
        tuple(_fewer_cold_starts(fixed, point) for point in points),
        tuple(_less_memory(fixed, point) for point in points),
    )


def _fewer_cold_starts(fixed: Sequence[TradeoffPoint], point: TradeoffPoint) -> float | None:
    curve = sorted((p.idle_gb_s, p.cold_start_share) for p in fixed)
    at = _interpolate(curve, point.idle_gb_s, log_x=True)
    return None if at is None or at <= 0 else 1 - point.cold_start_share / at


def _less_memory(fixed: Sequence[TradeoffPoint], point: TradeoffPoint) -> float | None:
    curve = sorted((p.cold_start_share, p.idle_gb_s) for p in fixed)
    at = _interpolate(curve, point.cold_start_share, log_y=True)
    return None if at is None or at <= 0 else 1 - point.idle_gb_s / at


def _interpolate(
    curve: list[tuple[float, float]], x: float, *, log_x: bool = False, log_y: bool = False
) -> float | None:
    """y at ``x`` on a polyline through ``curve`` (sorted by x); None outside it."""

    def fx(v: float) -> float:
        return math.log(max(v, 1e-9)) if log_x else v

    def fy(v: float) -> float:
        return math.log(max(v, 1e-9)) if log_y else v

    for (x0, y0), (x1, y1) in itertools.pairwise(curve):
        if x0 <= x <= x1:
            if fx(x1) == fx(x0):
                return min(y0, y1)
            share = (fx(x) - fx(x0)) / (fx(x1) - fx(x0))
            y = fy(y0) + share * (fy(y1) - fy(y0))
            return math.exp(y) if log_y else y
    return None


def markdown(result: Tradeoff) -> str:
    rows = [
        f"**{result.scenario}**: {result.functions:,} functions, {result.activations:,} "
        "activations\n",
        "| policy | cold-start share | idle memory (GB·s) | pre-warmed | fewer cold starts "
        "at equal memory | less memory at equal cold starts | simulated in |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for point in result.fixed:
        rows.append(_row(point, None, None))
    for point, fewer, less in zip(
        result.learned, result.fewer_cold_starts, result.less_memory, strict=True
    ):
        rows.append(_row(point, fewer, less))
    return "\n".join(rows) + "\n"


def _row(point: TradeoffPoint, fewer: float | None, less: float | None) -> str:
    def share(value: float | None) -> str:
        return "" if value is None else f"{value:.0%}"

    return (
        f"| {point.label} | {point.cold_start_share:.2%} | {point.idle_gb_s:,.0f} | "
        f"{point.prewarmed:,} | {share(fewer)} | {share(less)} | {point.report.wall_s:.0f} s |"
    )


def write(result: Tradeoff, directory: Path) -> list[Path]:
    """``tradeoff.json``, ``tradeoff.md`` and ``tradeoff.png`` in ``directory``."""
    from matplotlib.figure import Figure

    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / "tradeoff.json", directory / "tradeoff.md", directory / "tradeoff.png"]
    summary = {
        "scenario": result.scenario,
        "functions": result.functions,
        "activations": result.activations,
        "points": [
            {
                "label": p.label,
                "keep_alive_s": p.keep_alive_s,
                "cold_start_share": p.cold_start_share,
                "idle_gb_s": p.idle_gb_s,
                "prewarmed": p.prewarmed,
                "wall_s": p.report.wall_s,
            }
            for p in (*result.fixed, *result.learned)
        ],
        "fewer_cold_starts": result.fewer_cold_starts,
        "less_memory": result.less_memory,
    }
    paths[0].write_text(json.dumps(summary, indent=1) + "\n")
    paths[1].write_text(markdown(result))
    figure = Figure(figsize=(7, 4.5))
    ax = figure.subplots()
    kept = [p for p in result.fixed if p.idle_gb_s > 0]
    ax.plot(
        [p.idle_gb_s for p in kept],
        [100 * p.cold_start_share for p in kept],
        "o-",
        color="tab:green",
        label="fixed keep-alive",
    )
    for p in kept:
        ax.annotate(f"{p.keep_alive_s:g} s", (p.idle_gb_s, 100 * p.cold_start_share), fontsize=8)
    ax.plot(
        [p.idle_gb_s for p in result.learned],
        [100 * p.cold_start_share for p in result.learned],
        "s-",
        color="tab:blue",
        label="learned windows",
    )
    for p in result.learned:
        ax.annotate(
            p.label.removeprefix("learned "), (p.idle_gb_s, 100 * p.cold_start_share), fontsize=8
        )
    for none in (p for p in result.fixed if p.keep_alive_s == NO_KEEP_ALIVE_S):
        ax.axhline(
            100 * none.cold_start_share, color="tab:red", linestyle=":", label="no keep-alive"
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(
        xlabel="idle container memory (GB·s, log)",
        ylabel="cold starts (% of runs, log)",
        title=f"{result.scenario}: {result.functions:,} functions",
    )
    ax.legend()
    figure.tight_layout()
    figure.savefig(paths[2], dpi=100)
    return paths
