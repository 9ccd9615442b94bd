"""A workload file as a scenario: every cell it describes, side by side."""

from __future__ import annotations

from typing import Any

from broker_sched.bench.cell import CellResult, run_cell
from broker_sched.bench.context import BenchContext
from broker_sched.bench.plots import BarFigure, Line, Marker, Panel, TimeFigure
from broker_sched.bench.report import Report, Table
from broker_sched.bench.workload import Workload

MARKED_EVENTS = ("partitions_resized", "throttle_on", "throttle_off", "warmup_ended")


async def run(ctx: BenchContext, workload: Workload) -> Report:
    plan = workload.model_copy(update={"transports": ctx.transports})
    cells = plan.cells()
    results: list[CellResult] = []
    for index, cell in enumerate(cells, start=1):
        result = await run_cell(ctx.base, plan, cell, progress=ctx.progress)
        results.append(result)
        ctx.progress.note(
            f"[{index}/{len(cells)}] {cell.label}: {result.summary.tps:.0f} TPS, "
            f"p99 {result.summary.latency_ms['p99']:.1f} ms"
        )
    report = Report(
        scenario=plan.name,
        title=f"workload {plan.name}",
        quick=ctx.quick,
        summary=(
            f"{plan.invokers} invokers x {plan.slots} slots, {plan.runtime} runtime, "
            f"{plan.actions.run_ms:g} ms runs; warm-up {plan.warmup_s:g} s, "
            f"{plan.duration_s:g} s measured per cell."
        ),
        data={
            "workload": plan.model_dump(mode="json"),
            "cells": [result.to_json() for result in results],
        },
    )
    report.tables.append(cells_table(results))
    report.figures.append(latency_figure(plan.name, results, plan.warmup_s))
    report.figures.append(tps_figure(plan.name, results))
    return report


def cells_table(results: list[CellResult]) -> Table:
    return Table(
        "Cells",
        [
            "cell",
            "TPS",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "cold starts",
            "created",
            "evicted",
            "peak containers",
            "errors",
        ],
        [_cell_row(result) for result in results],
    )


def _cell_row(result: CellResult) -> list[Any]:
    summary = result.summary
    latency = summary.latency_ms
    return [
        result.label,
        summary.tps,
        latency["p50"],
        latency["p95"],
        latency["p99"],
        latency["p99.9"],
        latency["max"],
        result.cold_starts,
        result.containers_created,
        result.containers_evicted,
        result.containers_peak,
        sum(summary.errors.values()),
    ]


def latency_figure(name: str, results: list[CellResult], warmup_s: float) -> TimeFigure:
    panels = []
    for result in results:
        series = result.series
        markers = [Marker(e["t_s"], e["kind"]) for e in result.events if e["kind"] in MARKED_EVENTS]
        panels.append(
            Panel(
                title=result.label,
                ylabel="latency ms",
                lines=[
                    Line("p99", series["t_s"], series["p99_ms"]),
                    Line("p50", series["t_s"], series["p50_ms"], ":"),
                ],
                markers=markers,
                log_y=True,
                shade_until_s=result.warmup_s or warmup_s,
            )
        )
    return TimeFigure(f"{name}-latency", f"{name}: latency per interval", panels, columns=2)


def tps_figure(name: str, results: list[CellResult]) -> BarFigure:
    return BarFigure(
        name=f"{name}-tps",
        title=f"{name}: TPS per cell",
        categories=[r.label for r in results],
        groups={"TPS": [r.summary.tps for r in results]},
        ylabel="TPS",
    )
