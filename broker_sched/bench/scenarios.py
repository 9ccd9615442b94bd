"""The built-in scenarios by name, and the overhead block every report carries."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from broker_sched.bench import (
    bursty,
    cold_chain,
    custom,
    full_cluster,
    leases,
    many_topics,
    mixed,
    overhead,
    partition_limit,
    rebalance,
    seed_table,
    tails,
    warm_tiers,
)
from broker_sched.bench.context import BenchContext
from broker_sched.bench.floor import FULL as FLOOR_FULL
from broker_sched.bench.floor import QUICK as FLOOR_QUICK
from broker_sched.bench.floor import run as run_floor
from broker_sched.bench.overhead import overhead_figure, overhead_table, overhead_targets
from broker_sched.bench.plots import Line, Panel, TimeFigure
from broker_sched.bench.processes import add_processes
from broker_sched.bench.raw import FloorResult, run_raw
from broker_sched.bench.report import Report, Table
from broker_sched.bench.workload import Workload, load_workload
from broker_sched.errors import ConfigError

Scenario = Callable[[BenchContext], Awaitable[Report]]


async def raw(ctx: BenchContext) -> Report:
    """The floor per transport: one consumer per user, so nothing waits for a consumer."""
    plan = overhead.QUICK if ctx.quick else overhead.FULL
    floors = {}
    for transport in ctx.transports:
        floors[transport] = await run_raw(
            ctx.settings_for(transport),
            users=plan.users,
            consumers=plan.users,
            run_ms=plan.run_ms,
            warmup_s=plan.warmup_s,
            duration_s=plan.duration_s,
            interval_s=plan.interval_s,
            progress=ctx.progress,
        )
    report = Report(
        scenario="raw",
        title="raw: the transport alone, the floor under the scheduler",
        quick=ctx.quick,
        summary=(
            f"{plan.users} closed-loop users publish a message and wait for its reply; "
            f"{plan.users} consumers fetch, run {plan.run_ms:g} ms, reply on a channel and "
            "ack. The overhead block below compares the scheduler with the same transport."
        ),
        data={"transports": {t: floor.to_json() for t, floor in floors.items()}},
    )
    report.tables.append(
        Table(
            "Floor: one consumer per user",
            ["transport", "broker", "users", "TPS", "p50 ms", "p99 ms", "p99.9 ms", "max ms"],
            [_floor_row(floor) for floor in floors.values()],
        )
    )
    report.figures.append(_series_figure(floors))
    return report


def _floor_row(floor: FloorResult) -> list[Any]:
    latency = floor.summary.latency_ms
    return [
        floor.transport,
        floor.broker,
        floor.users,
        floor.summary.tps,
        latency["p50"],
        latency["p99"],
        latency["p99.9"],
        latency["max"],
    ]


def _series_figure(floors: dict[str, FloorResult]) -> TimeFigure:
    panel = Panel(title="p50 and p99 per interval", ylabel="ms", log_y=True)
    for transport, floor in floors.items():
        series = floor.series
        panel.lines.append(Line(f"{transport} p50", series["t_s"], series["p50_ms"]))
        panel.lines.append(Line(f"{transport} p99", series["t_s"], series["p99_ms"], ":"))
    return TimeFigure("raw-latency", "raw transport latency over time", [panel])


async def overhead_floor(ctx: BenchContext) -> Report:
    report = await run_floor(ctx.base, ctx.transports, quick=ctx.quick, progress=ctx.progress)
    plan = FLOOR_QUICK if ctx.quick else FLOOR_FULL
    await add_processes(report, ctx.base, ctx.transports, plan, ctx.progress)
    return report


async def _builtin_workload(make: Callable[[], Workload], ctx: BenchContext) -> Report:
    """A built-in workload (:mod:`broker_sched.bench.tails`), run as a workload file is."""
    return await custom.run(ctx, make())


SCENARIOS: dict[str, Scenario] = {
    "raw": raw,
    "overhead": overhead_floor,
    "seed-table": seed_table.run,
    "mixed": mixed.run,
    "full-cluster": full_cluster.run,
    "rebalance": rebalance.run,
    "partition-limit": partition_limit.run,
    "many-topics": many_topics.run,
    "cold-chain": cold_chain.run,
    "warm-tiers": warm_tiers.run,
    "bursty": bursty.run,
    "leases": leases.run,
    **{name: partial(_builtin_workload, make) for name, make in tails.WORKLOADS.items()},
}
SELF_CONTAINED = {"overhead", "cold-chain", "warm-tiers", "bursty", "leases"}
"""Scenarios with no overhead block appended: their own floor comparison, or one that
measures container starts, on which the transport's cost has no bearing."""
ALL = "all"


def names(scenario: str) -> list[str]:
    """``all`` → every built-in scenario; a name or a workload file → itself."""
    if scenario == ALL:
        return list(SCENARIOS)
    if scenario in SCENARIOS or scenario.endswith(".toml"):
        return [scenario]
    known = ", ".join([*SCENARIOS, ALL])
    raise ConfigError(
        f"unknown scenario {scenario!r} (known: {known}, or a workload .toml file; "
        "`bench docker-ops` measures the Docker engine itself)"
    )


async def run_scenario(scenario: str, ctx: BenchContext) -> Report:
    if scenario in SCENARIOS:
        report = await SCENARIOS[scenario](ctx)
    else:
        report = await custom.run(ctx, load_workload(Path(scenario)))
    if scenario not in SELF_CONTAINED:
        await add_overhead(report, ctx)
    return report


async def add_overhead(report: Report, ctx: BenchContext) -> None:
    """The scheduler-vs-raw block for every transport of the report."""
    entries = [await ctx.overhead(transport) for transport in ctx.transports]
    report.data["overhead"] = {entry.transport: entry.to_json() for entry in entries}
    report.tables.append(overhead_table(entries))
    report.targets += [target for entry in entries for target in overhead_targets(entry)]
    report.figures.append(overhead_figure(f"{report.scenario}-overhead", entries))
