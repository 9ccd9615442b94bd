"""mixed: short and long actions together, below and above what the slots can carry.

Half the traffic goes to 15 short actions (2-10 ms runs), half to 15 long ones
(lognormal, median 300 ms): the shape that broke a scheduler tuned on identical 2 ms
actions, because the short ones can take the whole cluster in the first second, before
any run time is known. 10 invokers x 20 slots, simulated Docker-like cold starts.

Two loads per policy and transport, both computed from the slots: *below* capacity, an
open loop at half of what the slots carry (latency from the intended send, so a stall
cannot hide); *above* capacity, more closed-loop users than there are slots. Overhead is
each activation's latency minus its own run time: what scheduling added.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from broker_sched.bench.analysis import ratio
from broker_sched.bench.cell import CellResult, run_cell
from broker_sched.bench.context import BenchContext
from broker_sched.bench.report import Report, Table, Target, at_least, at_most
from broker_sched.bench.workload import ActionClass, Policy, RunTime, Workload

INVOKERS = 10
SLOTS = 20
BELOW_SHARE = 0.5
"""The open loop below capacity offers this share of what the slots can carry."""
ABOVE_USERS_PER_SLOT = 1.5
CLASSES = [
    ActionClass(
        name="short", count=15, share=0.5, run_ms=RunTime(kind="uniform", low_ms=2, high_ms=10)
    ),
    ActionClass(
        name="long",
        count=15,
        share=0.5,
        run_ms=RunTime(kind="lognormal", median_ms=300, sigma=0.4),
    ),
]
BELOW_P99_GOAL_MS = 250.0
BELOW_VS_SHARDING = 1 / 5
ABOVE_VS_SHARDING = 1 / 3
BELOW_TPS_SHARE = 0.9
ABOVE_TPS_SHARE = 0.8
STARVATION_FACTOR = 3.0


def slot_capacity_per_s() -> float:
    """What the slots carry at most: slots / mean run time, weighted by traffic share."""
    total_share = sum(spec.share for spec in CLASSES)
    mean_s = sum(spec.share * spec.run_ms.mean_ms for spec in CLASSES) / total_share / 1000
    return INVOKERS * SLOTS / mean_s


def workloads(quick: bool, transports: list[str], policies: list[Policy]) -> dict[str, Workload]:
    common: dict[str, Any] = {
        "name": "mixed",
        "transports": transports,
        "policy": policies,
        "invokers": INVOKERS,
        "slots": SLOTS,
        "classes": CLASSES,
        "warmup_s": 4.0 if quick else 8.0,
        "duration_s": 4.0 if quick else 10.0,
        "interval_s": 0.5,
        "timeout_s": 30.0,
        "settings": {
            "simulated": {"create_ms": (500.0, 1300.0)},
            "kafka": {"default_partitions": 8},
        },
    }
    return {
        "below": Workload(**common, rate_per_s=[round(BELOW_SHARE * slot_capacity_per_s())]),
        "above": Workload(**common, users=[int(ABOVE_USERS_PER_SLOT * INVOKERS * SLOTS)]),
    }


async def run(ctx: BenchContext) -> Report:
    policies: list[Policy] = [ctx.policy] if ctx.policy else ["sharding", "acs"]
    plans = workloads(ctx.quick, ctx.transports, policies)
    results: list[MixedCell] = []
    runs = [(load, plan, cell) for load, plan in plans.items() for cell in plan.cells()]
    for index, (load, plan, cell) in enumerate(runs, start=1):
        result = await run_cell(ctx.base, plan, cell, progress=ctx.progress)
        results.append(MixedCell(load, result, starvation(result)))
        summary = result.summary
        overhead = summary.overhead_ms or {}
        ctx.progress.note(
            f"[{index}/{len(runs)}] {load}: {cell.label}: {summary.tps:.0f} TPS, "
            f"overhead p99 {overhead.get('p99', 0):.0f} ms, errors {summary.errors}"
        )
    capacity = slot_capacity_per_s()
    report = Report(
        scenario="mixed",
        title="mixed: short and long actions, below and above capacity",
        quick=ctx.quick,
        summary=(
            f"{INVOKERS} invokers x {SLOTS} slots; 15 short actions (2-10 ms) and 15 long "
            "ones (lognormal, median 300 ms), half the traffic each; simulated cold starts "
            f"of 500-1300 ms. The slots carry at most {capacity:.0f} activations/s. Below: "
            f"an open loop at {BELOW_SHARE:g} of that; above: "
            f"{int(ABOVE_USERS_PER_SLOT * INVOKERS * SLOTS)} closed-loop users. Overhead = "
            "latency minus the activation's own run time."
        ),
        data={"slot_capacity_per_s": capacity, "cells": [r.to_json() for r in results]},
    )
    report.tables.append(cells_table(results, capacity))
    for transport in ctx.transports:
        report.targets += targets(transport, results, capacity)
    return report


@dataclass(frozen=True, slots=True)
class MixedCell:
    """One cell, the load it ran under, and how evenly its actions were served."""

    load: str
    cell: CellResult
    starvation: float | None

    def to_json(self) -> dict[str, Any]:
        return {**self.cell.to_json(), "load": self.load, "starvation": self.starvation}


def starvation(result: CellResult) -> float | None:
    """The worst action's p99 overhead ÷ the median p99 of its class (1 = all alike).

    Within a class, since the classes differ by design: a 300 ms action queues longer
    than a 5 ms one in any overloaded cluster, and the median of a half-short,
    half-long mix would fall between the two and say nothing.
    """
    by_action = result.summary.overhead_p99_by_action_ms or {}
    ratios = []
    for spec in CLASSES:
        p99s = [v for name, v in by_action.items() if name.split("/")[-1][:-3] == spec.name]
        if len(p99s) >= 2 and statistics.median(p99s) > 0:
            ratios.append(max(p99s) / statistics.median(p99s))
    return round(max(ratios), 2) if ratios else None


def offered_per_s(result: CellResult, capacity: float) -> float:
    return float(result.rate_per_s) if result.rate_per_s is not None else capacity


def cells_table(results: list[MixedCell], capacity: float) -> Table:
    rows = []
    for r in results:
        cell = r.cell
        summary = cell.summary
        overhead = summary.overhead_ms or {}
        rows.append(
            [
                r.load,
                cell.transport,
                cell.policy,
                summary.tps,
                round(summary.tps / offered_per_s(cell, capacity), 2),
                overhead.get("p50"),
                overhead.get("p99"),
                r.starvation,
                cell.cold_starts,
                cell.containers_evicted,
                cell.containers_peak,
                sum(summary.errors.values()),
            ]
        )
    return Table(
        "Cells",
        [
            "load",
            "transport",
            "policy",
            "TPS",
            "of offered/ideal",
            "overhead p50 ms",
            "overhead p99 ms",
            "worst/class median p99",
            "cold starts",
            "evicted",
            "peak containers",
            "errors",
        ],
        rows,
        note="'of offered/ideal': TPS over the open loop's rate (below) or over what the "
        "slots carry (above).",
    )


def _find(results: list[MixedCell], transport: str, policy: str, load: str) -> MixedCell | None:
    return next(
        (
            r
            for r in results
            if r.cell.transport == transport and r.cell.policy == policy and r.load == load
        ),
        None,
    )


def _p99(result: MixedCell | None) -> float | None:
    overhead = None if result is None else result.cell.summary.overhead_ms
    return None if overhead is None else float(overhead["p99"])


def targets(transport: str, results: list[MixedCell], capacity: float) -> list[Target]:
    found: list[Target] = []
    for load in ("below", "above"):
        acs = _find(results, transport, "acs", load)
        sharding = _find(results, transport, "sharding", load)
        if acs is None:
            continue
        acs_p99 = _p99(acs)
        vs = BELOW_VS_SHARDING if load == "below" else ABOVE_VS_SHARDING
        why = "scheduling adds more than the target at the tail"
        if load == "below":
            found.append(
                at_most(f"{transport} below: acs overhead p99 ms", acs_p99, BELOW_P99_GOAL_MS, why)
            )
        found.append(
            at_most(
                f"{transport} {load}: acs overhead p99 ÷ sharding's",
                ratio(acs_p99, _p99(sharding)),
                vs,
                "sharding was not run, or acs's tail is not far enough below it",
            )
        )
        share = BELOW_TPS_SHARE if load == "below" else ABOVE_TPS_SHARE
        found.append(
            at_least(
                f"{transport} {load}: acs TPS ÷ {'offered' if load == 'below' else 'ideal'}",
                round(acs.cell.summary.tps / offered_per_s(acs.cell, capacity), 3),
                share,
                "the process is CPU-bound (2 cores run load, scheduler and containers)",
            )
        )
        if load == "above":
            found.append(
                at_most(
                    f"{transport} above: worst action p99 ÷ its class's median",
                    acs.starvation,
                    STARVATION_FACTOR,
                    "some action waited far longer than the others",
                )
            )
        errors = sum(acs.cell.summary.errors.values())
        found.append(at_most(f"{transport} {load}: acs lost or failed", errors, 0, "see errors"))
    return found
