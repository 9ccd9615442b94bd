"""many-topics: what one queue per action costs as actions multiply (50 → 1,000).

The backlog monitor reads the backlog of every active action once per tick
(``check_interval_s``, 100 ms): with a queue per action that read must stay cheap
when there are a thousand of them. For each size the scenario declares the queues,
publishes to all of them (round robin, a few publishers at once: the broker's ingest
rate across that many queues), then times ``transport.backlogs`` over every
``(queue, group)`` pair — exactly the monitor's call — several times and reports the
median per tick and per action. Target: ≤ 1 ms per action per tick at 1,000 actions.

Consuming 1,000 queues at once would need 1,000 consumers (on Kafka, 1,000 consumer
groups each with its own client); that is beyond what this scenario runs on a small
machine, so throughput here is the publish side.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass

from broker_sched.bench.cell import delete_queues
from broker_sched.bench.context import BenchContext
from broker_sched.bench.plots import Line, Panel, TimeFigure
from broker_sched.bench.report import Report, Table, Target, at_most
from broker_sched.bench.settings import run_tag
from broker_sched.topology import consumer_group

MS_PER_ACTION_GOAL = 1.0
CONCURRENCY = 32
PAYLOAD = b"x" * 240


@dataclass(frozen=True, slots=True)
class Plan:
    sizes: tuple[int, ...]
    messages_per_queue: int
    rounds: int


FULL = Plan(sizes=(50, 200, 1000), messages_per_queue=2, rounds=5)
QUICK = Plan(sizes=(10, 50), messages_per_queue=1, rounds=3)


async def run(ctx: BenchContext) -> Report:
    plan = QUICK if ctx.quick else FULL
    results: dict[str, list[SizeResult]] = {}
    for transport in ctx.transports:
        results[transport] = [await measure(ctx, transport, size, plan) for size in plan.sizes]
    report = Report(
        scenario="many-topics",
        title="many-topics: backlog-check cost and publish rate as queues multiply",
        quick=ctx.quick,
        summary=(
            f"Sizes {list(plan.sizes)} queues; {plan.messages_per_queue} message(s) published "
            f"to each by {CONCURRENCY} concurrent publishers; the backlog of every queue read "
            f"in one `backlogs()` call, {plan.rounds} times (median reported)."
        ),
        data={
            "plan": {"sizes": list(plan.sizes), "rounds": plan.rounds},
            "transports": {
                t: {"sizes": [asdict(row) for row in rows]} for t, rows in results.items()
            },
        },
    )
    report.tables.append(table(results))
    report.targets += targets(results)
    report.figures.append(figure(results))
    return report


@dataclass(frozen=True, slots=True)
class SizeResult:
    """One transport at one number of queues."""

    queues: int
    declare_ms_per_queue: float
    publish_per_s: float
    backlog_tick_ms: float
    """The median of the rounds: one ``backlogs()`` call over every queue."""
    backlog_ms_per_action: float
    backlog_ticks_ms: list[float]
    pending_seen: int
    """What the batched read counted, to check against ``pending_expected``."""
    pending_expected: int


async def measure(ctx: BenchContext, name: str, size: int, plan: Plan) -> SizeResult:
    transport = ctx.transport(name)
    tag = run_tag()
    queues = [f"bench-{tag}-mt-{index:04d}" for index in range(size)]
    pairs = [(queue, consumer_group(queue)) for queue in queues]
    async with transport:
        try:
            declare_s = await _timed_all(queues, transport.declare)
            messages = [q for q in queues for _ in range(plan.messages_per_queue)]
            publish_s = await _timed_all(messages, lambda q: transport.publish(q, PAYLOAD))
            ticks_ms: list[float] = []
            pending = 0
            for _ in range(plan.rounds):
                started_s = time.monotonic()
                backlogs = await transport.backlogs(pairs)
                ticks_ms.append((time.monotonic() - started_s) * 1000)
                pending = sum(b.pending for b in backlogs)
        finally:
            await delete_queues(transport, queues)
    tick_ms = statistics.median(ticks_ms)
    result = SizeResult(
        queues=size,
        declare_ms_per_queue=round(declare_s * 1000 / size, 3),
        publish_per_s=round(len(messages) / publish_s, 1),
        backlog_tick_ms=round(tick_ms, 3),
        backlog_ms_per_action=round(tick_ms / size, 4),
        backlog_ticks_ms=[round(t, 3) for t in ticks_ms],
        pending_seen=pending,
        pending_expected=len(messages),
    )
    ctx.progress.note(
        f"many-topics {name} {size} queues: backlog tick {tick_ms:.1f} ms "
        f"({tick_ms / size:.3f} ms/action), publish {result.publish_per_s:.0f}/s"
    )
    return result


async def _timed_all(items: Sequence[str], call: Callable[[str], Awaitable[None]]) -> float:
    """Seconds to run ``call`` on every item, ``CONCURRENCY`` at a time."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(item: str) -> None:
        async with gate:
            await call(item)

    started_s = time.monotonic()
    await asyncio.gather(*(one(item) for item in items))
    return max(time.monotonic() - started_s, 1e-9)


def targets(results: dict[str, list[SizeResult]]) -> list[Target]:
    found = []
    for transport, rows in results.items():
        largest = max(rows, key=lambda row: row.queues)
        found.append(
            at_most(
                f"{transport}: backlog check ms per action per tick, {largest.queues} actions",
                largest.backlog_ms_per_action,
                MS_PER_ACTION_GOAL,
                f"one backlogs() call over {largest.queues} queues took "
                f"{largest.backlog_tick_ms:.0f} ms; the backend does not batch it enough",
            )
        )
    return found


def table(results: dict[str, list[SizeResult]]) -> Table:
    rows = [
        [
            t,
            r.queues,
            r.backlog_tick_ms,
            r.backlog_ms_per_action,
            r.publish_per_s,
            r.declare_ms_per_queue,
            f"{r.pending_seen}/{r.pending_expected}",
        ]
        for t, rows in results.items()
        for r in rows
    ]
    return Table(
        "Backlog check and publish rate by number of queues",
        [
            "transport",
            "queues",
            "backlog tick ms",
            "ms per action",
            "publish /s",
            "declare ms per queue",
            "pending seen/expected",
        ],
        rows,
        note=f"Goal: ≤ {MS_PER_ACTION_GOAL:g} ms per action per tick at the largest size. "
        "pending seen/expected checks that the batched read counted every message.",
    )


def figure(results: dict[str, list[SizeResult]]) -> TimeFigure:
    sizes = sorted({r.queues for rows in results.values() for r in rows})
    cost = Panel("backlog check per action per tick", "ms per action", log_y=True, log_x=True)
    rate = Panel("publish rate across all queues", "messages/s", log_x=True)
    for transport, rows in results.items():
        xs = [float(r.queues) for r in rows]
        cost.lines.append(Line(transport, xs, [r.backlog_ms_per_action for r in rows], "o-"))
        rate.lines.append(Line(transport, xs, [r.publish_per_s for r in rows], "o-"))
    cost.lines.append(
        Line("goal", [float(s) for s in sizes], [MS_PER_ACTION_GOAL] * len(sizes), "--", "tab:red")
    )
    return TimeFigure(
        name="many-topics",
        title="many-topics: cost per action as queues multiply",
        panels=[cost, rate],
        columns=2,
        xlabel="queues (actions)",
    )
