"""Scheduler overhead: the same closed-loop load through acs and on the transport alone.

Every report carries this block for each transport it ran on, so its numbers can be read
against the floor. The scheduler side is one action on one invoker, measured once its
containers are steady. acs deliberately runs as few containers as keep the queueing
wait under its target (with 2 ms runs, often fewer than there are users), so the raw
side is then run with as many consumers as acs had containers: both sides queue alike
and the ratios isolate what the scheduler's path costs. Ratios: warm-path p50
(scheduler ÷ raw, lower is better) and closed-loop throughput (scheduler ÷ raw, higher
is better).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from broker_sched.bench.analysis import ratio
from broker_sched.bench.cell import CellResult, run_cell
from broker_sched.bench.plots import BarFigure
from broker_sched.bench.progress import Progress
from broker_sched.bench.raw import FloorResult, run_raw
from broker_sched.bench.report import Table, Target, at_least, at_most
from broker_sched.bench.settings import derive
from broker_sched.bench.workload import Workload
from broker_sched.config import Settings

WARM_P50_RATIO_GOAL = 1.5
TPS_RATIO_GOAL = 0.7


@dataclass(frozen=True, slots=True)
class OverheadPlan:
    users: int
    run_ms: float
    warmup_s: float
    duration_s: float
    interval_s: float
    settle_s: float
    max_warmup_s: float


FULL = OverheadPlan(
    8, 2.0, warmup_s=2.0, duration_s=4.0, interval_s=0.5, settle_s=4.0, max_warmup_s=30.0
)
QUICK = OverheadPlan(
    4, 2.0, warmup_s=0.8, duration_s=1.0, interval_s=0.25, settle_s=0.5, max_warmup_s=10.0
)


@dataclass(frozen=True, slots=True)
class Side:
    """What one side of the comparison measured in its window."""

    tps: float
    latency_ms: dict[str, float]
    completed: int
    errors: dict[str, int]

    @classmethod
    def of(cls, result: CellResult | FloorResult) -> Side:
        summary = result.summary
        return cls(summary.tps, summary.latency_ms, summary.completed, summary.errors)


@dataclass(frozen=True, slots=True)
class Overhead:
    """The scheduler against the raw transport on one transport: the block every report
    carries, one per transport it ran on."""

    transport: str
    users: int
    run_ms: float
    containers: int
    """Containers acs kept steady, and so the raw side's consumers."""
    raw: Side
    scheduler: Side
    warm_latency_ms: dict[str, float]
    """The scheduler's warm runs alone (empty when none was warm)."""

    @property
    def warm_p50_ratio(self) -> float | None:
        return ratio(self.warm_latency_ms.get("p50"), self.raw.latency_ms["p50"])

    @property
    def tps_ratio(self) -> float | None:
        return ratio(self.scheduler.tps, self.raw.tps)

    def to_json(self) -> dict[str, Any]:
        return {
            "transport": self.transport,
            "users": self.users,
            "run_ms": self.run_ms,
            "containers": self.containers,
            "warm_p50_ratio": self.warm_p50_ratio,
            "tps_ratio": self.tps_ratio,
            "raw": asdict(self.raw),
            "scheduler": {**asdict(self.scheduler), "warm_latency_ms": self.warm_latency_ms},
        }


async def measure_overhead(
    base: Settings, transport: str, *, quick: bool, progress: Progress
) -> Overhead:
    plan = QUICK if quick else FULL
    settings = derive(base, {"transport": transport})
    workload = Workload(
        name="overhead",
        transports=[transport],
        policy=["acs"],
        invokers=1,
        users=[plan.users],
        warmup_s=plan.warmup_s,
        settle_s=plan.settle_s,
        max_warmup_s=plan.max_warmup_s,
        duration_s=plan.duration_s,
        interval_s=plan.interval_s,
        settings={"kafka": {"default_partitions": plan.users}},
    )
    scheduled = await run_cell(settings, workload, workload.cells()[0], progress=progress)
    containers = steady_containers(scheduled)
    raw = await run_raw(
        settings,
        users=plan.users,
        consumers=containers,
        run_ms=plan.run_ms,
        warmup_s=plan.warmup_s,
        duration_s=plan.duration_s,
        interval_s=plan.interval_s,
        progress=progress,
    )
    overhead = Overhead(
        transport,
        plan.users,
        plan.run_ms,
        containers,
        raw=Side.of(raw),
        scheduler=Side.of(scheduled),
        warm_latency_ms=scheduled.warm_latency_ms or {},
    )
    progress.note(
        f"{transport} overhead ({plan.users} users, {containers} containers/consumers): "
        f"acs warm p50 {overhead.warm_latency_ms.get('p50', 0):.2f} ms "
        f"{overhead.scheduler.tps:.0f}/s; "
        f"raw p50 {overhead.raw.latency_ms['p50']:.2f} ms {overhead.raw.tps:.0f}/s"
    )
    return overhead


def steady_containers(cell: CellResult) -> int:
    """The median container count sampled in the cell's measured window (at least 1)."""
    series = cell.series
    window = [
        count
        for at_s, count in zip(series["t_s"], series.get("containers", []), strict=False)
        if count is not None and at_s >= cell.warmup_s
    ]
    return max(1, round(statistics.median(window))) if window else 1


def overhead_targets(entry: Overhead) -> list[Target]:
    transport = entry.transport
    extra_ms = entry.warm_latency_ms.get("p50", 0.0) - entry.raw.latency_ms["p50"]
    why_latency = (
        f"the scheduler path adds {extra_ms:.2f} ms at p50: the activation and its result "
        "are built and validated (pydantic) on both sides and the controller resolves the "
        "reply; both sides ran the same number of consumers, so this is the path's cost, "
        "not queueing"
    )
    why_tps = (
        "closed-loop throughput is users ÷ latency, so it falls with the latency above; "
        "the scheduler's own work (monitor ticks, heartbeats, codec) shares the same "
        "event loop and CPU as the load generator"
    )
    return [
        at_most(
            f"{transport}: warm-path p50 ÷ raw p50",
            entry.warm_p50_ratio,
            WARM_P50_RATIO_GOAL,
            why_latency,
        ),
        at_least(
            f"{transport}: throughput ÷ raw throughput",
            entry.tps_ratio,
            TPS_RATIO_GOAL,
            why_tps,
        ),
    ]


def overhead_table(entries: list[Overhead]) -> Table:
    rows = [
        [
            e.transport,
            e.users,
            e.containers,
            e.raw.latency_ms["p50"],
            e.raw.latency_ms["p99"],
            e.raw.tps,
            e.warm_latency_ms.get("p50"),
            e.scheduler.latency_ms["p99"],
            e.scheduler.tps,
            e.warm_p50_ratio,
            e.tps_ratio,
        ]
        for e in entries
    ]
    return Table(
        "Scheduler overhead against the raw transport",
        [
            "transport",
            "users",
            "containers / consumers",
            "raw p50 ms",
            "raw p99 ms",
            "raw TPS",
            "acs warm p50 ms",
            "acs p99 ms",
            "acs TPS",
            "p50 ratio",
            "TPS ratio",
        ],
        rows,
        note=(
            "Same closed-loop users and 2 ms runs on both sides: acs = one action through "
            "the whole scheduler (1 invoker), measured once its containers are steady; "
            "raw = publish → fetch → run → reply → ack with as many consumers as acs had "
            f"containers. Goals: p50 ratio ≤ {WARM_P50_RATIO_GOAL}, "
            f"TPS ratio ≥ {TPS_RATIO_GOAL}."
        ),
    )


def overhead_figure(name: str, entries: list[Overhead]) -> BarFigure:
    return BarFigure(
        name=name,
        title="Scheduler overhead: p50 latency, raw transport vs acs (warm)",
        categories=[e.transport for e in entries],
        groups={
            "raw p50 ms": [e.raw.latency_ms["p50"] for e in entries],
            "acs warm p50 ms": [e.warm_latency_ms.get("p50") for e in entries],
        },
        ylabel="ms",
    )
