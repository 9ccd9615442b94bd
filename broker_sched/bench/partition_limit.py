"""partition-limit: more consumers than partitions, and what growing partitions costs.

A saturating closed-loop load (twice as many users as the most consumers) on one queue
with ``partitions`` partitions; consumers are added step by step past the partition
count. Each consumer handles one message at a time in ``run_ms``, so the ideal
throughput is consumers x 1000 / ``run_ms``. On a partitioned broker it stops growing at
the partition count: each partition has one owner and every further consumer sits idle
(no partitions, no messages). Then the queue is resized to one partition per consumer
under load: the cost is the call itself, the rebalance it triggers (a pause) and the time
until the idle consumers pick up their new partitions.

The scheduler's own policy never creates such idle containers (docs/scaling.md rule 4 caps an
action's containers at its partition count); this scenario shows why the cap exists.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from broker_sched.bench.analysis import longest_gap, window_latency
from broker_sched.bench.consumers import SETTLE_TIMEOUT_S, ConsumerPool, settled_pool
from broker_sched.bench.context import BenchContext
from broker_sched.bench.load import Deadline, closed_loop, stop_tasks
from broker_sched.bench.plots import BarFigure, Line, Marker, Panel, TimeFigure
from broker_sched.bench.rebalance import KIP848
from broker_sched.bench.recorder import Recorder
from broker_sched.bench.report import Report, Table
from broker_sched.bench.settings import run_tag
from broker_sched.errors import BrokerSchedError
from transports.base import Transport

REQUEST_TIMEOUT_S = 30.0
PADDING = b"x" * 200
MARKED_EVENTS = ("consumer_added", "partitions_resized", "rebalance_started", "rebalance_finished")


@dataclass(frozen=True, slots=True)
class Plan:
    partitions: int
    steps: tuple[int, ...]
    run_ms: float
    step_s: float
    resize_window_s: float
    interval_s: float

    @property
    def users(self) -> int:
        return 2 * max(self.steps)

    @property
    def per_consumer_tps(self) -> float:
        return 1000 / self.run_ms


FULL = Plan(
    partitions=4, steps=(2, 4, 6, 8), run_ms=10.0, step_s=5.0, resize_window_s=12.0, interval_s=0.5
)
QUICK = Plan(
    partitions=2, steps=(1, 2, 3), run_ms=10.0, step_s=1.2, resize_window_s=3.0, interval_s=0.25
)


@dataclass(frozen=True, slots=True)
class Step:
    """One consumer count, measured once every partition has an owner."""

    consumers: int
    settled: bool
    """False when the group had not settled in time: the step measured a rebalance too."""
    tps: float
    p99_ms: float
    idle_consumers: int
    without_partitions: int | None
    """None where the broker does not say which member owns what."""
    ideal_tps: float
    expected_tps: float
    """What the partition count allows: the ideal, capped at one consumer per partition."""


@dataclass(frozen=True, slots=True)
class Resize:
    """Growing the partitions to one per consumer, under load."""

    from_partitions: int | None
    to: int
    call_ms: float
    pause_ms: float
    rebalances: int
    settled_after_ms: float | None
    """None when no rebalance finished within the window."""
    tps_before: float
    tps_after: float

    def to_json(self) -> dict[str, Any]:
        """As in ``results.json``, where the first key is ``from``."""
        fields = asdict(self)
        return {"from": fields.pop("from_partitions"), **fields}


@dataclass(frozen=True, slots=True)
class TransportResult:
    """One transport (or its KIP-848 variant): the steps, then the resize."""

    transport: str
    partitions: int | None
    per_consumer_tps: float
    steps: list[Step]
    ceiling_tps: float
    resize: Resize
    errors: dict[str, int]
    series: dict[str, list[Any]]
    """Per interval, as :meth:`Recorder.series` gives it (None where nothing completed)."""
    events: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return {
            **fields,
            "steps": [asdict(step) for step in self.steps],
            "resize": self.resize.to_json(),
        }


async def run(ctx: BenchContext) -> Report:
    plan = QUICK if ctx.quick else FULL
    results: dict[str, TransportResult] = {}
    for transport in ctx.transports:
        for label, overrides in variants(ctx, transport):
            result = await run_transport(ctx, transport, plan, overrides, label)
            results[label] = result
            steps = ", ".join(f"{s.consumers}→{s.tps:.0f}/s" for s in result.steps)
            resize = result.resize.to_json()
            ctx.progress.note(f"partition-limit {label}: {steps}; resize {resize}")
    report = Report(
        scenario="partition-limit",
        title="partition-limit: consumers beyond the partition count, and resizing under load",
        quick=ctx.quick,
        summary=(
            f"One queue with {plan.partitions} partitions (where the broker has them), "
            f"{plan.users} closed-loop users, {plan.run_ms:g} ms per message (so "
            f"{plan.per_consumer_tps:g}/s per busy consumer); consumers added in steps "
            f"{list(plan.steps)}, each step measured for {plan.step_s:g} s once every "
            f"partition has an owner; then resized to {max(plan.steps)} partitions under load."
        ),
        data={
            "plan": {
                "partitions": plan.partitions,
                "steps": list(plan.steps),
                "run_ms": plan.run_ms,
                "users": plan.users,
                "step_s": plan.step_s,
            },
            "transports": {label: result.to_json() for label, result in results.items()},
        },
    )
    report.tables += [steps_table(results, plan), resize_table(results)]
    report.figures.append(steps_figure(results, plan))
    report.figures += [timeline_figure(t, r) for t, r in results.items()]
    return report


def variants(ctx: BenchContext, transport: str) -> list[tuple[str, dict[str, Any]]]:
    """Each transport as configured; a rebalancing one on the KIP-848 protocol too."""
    found: list[tuple[str, dict[str, Any]]] = [(transport, {})]
    if ctx.transport(transport).capabilities.rebalances:
        found.append((f"{transport}-kip848", KIP848))
    return found


async def run_transport(
    ctx: BenchContext,
    name: str,
    plan: Plan,
    overrides: dict[str, Any] | None = None,
    label: str | None = None,
) -> TransportResult:
    transport = ctx.transport(name, overrides)
    queue = f"bench-{run_tag()}-plimit"
    total_s = (plan.step_s + 5) * len(plan.steps) + plan.resize_window_s
    recorder = Recorder(0.0, total_s, plan.interval_s)
    requests = _Requests(transport, queue, recorder)
    stop = Deadline()
    async with (
        transport,
        settled_pool(
            transport,
            queue,
            partitions=plan.partitions,
            consumers=plan.steps[0],
            run_ms=plan.run_ms,
            handle=requests.answered,
            recorder=recorder,
        ) as pool,
    ):
        partitions = pool.partitions
        recorder.events.clear()
        load = asyncio.create_task(closed_loop(plan.users, requests.send, until=stop, grace_s=2.0))
        try:
            async with ctx.progress.showing(f"partition-limit {label or name}", recorder):
                steps = await _steps(pool, plan, recorder)
                resize = await _resize(transport, pool, queue, plan, recorder)
            stop.now()
            await load
            recorder.finish()
        finally:
            stop.now()
            await stop_tasks([load], grace_s=5.0)
    return TransportResult(
        transport=name,
        partitions=partitions,
        per_consumer_tps=plan.per_consumer_tps,
        steps=steps,
        ceiling_tps=max(s.tps for s in steps),
        resize=resize,
        errors=dict(recorder.errors),
        series=recorder.series(),
        events=recorder.events,
    )


class _Requests:
    """The closed loop's requests, each done when a consumer handles its message: the
    queue has no reply channel, so the consumers' handler completes them."""

    def __init__(self, transport: Transport, queue: str, recorder: Recorder) -> None:
        self.transport = transport
        self.queue = queue
        self.recorder = recorder
        self.waiting: dict[bytes, asyncio.Future[None]] = {}

    async def answered(self, body: bytes) -> None:
        done = self.waiting.get(body.split(b"\n", 1)[0])
        if done is not None and not done.done():
            done.set_result(None)

    async def send(self, user: int) -> None:
        message_id = uuid.uuid4().hex.encode()
        done = self.waiting[message_id] = asyncio.get_running_loop().create_future()
        sent_s = time.monotonic()
        body = message_id + b"\n" + PADDING
        try:
            await self.transport.publish(self.queue, body, key=message_id.decode())
            await asyncio.wait_for(done, REQUEST_TIMEOUT_S)
        except TimeoutError:
            self.recorder.fail("timeout")
            return
        except BrokerSchedError as exc:
            self.recorder.fail(type(exc).__name__)
            return
        finally:
            self.waiting.pop(message_id, None)
        self.recorder.record((time.monotonic() - sent_s) * 1000)


async def _steps(pool: ConsumerPool, plan: Plan, recorder: Recorder) -> list[Step]:
    steps = []
    for consumers in plan.steps:
        while len(pool.members) < consumers:
            member = await pool.add()
            recorder.event("consumer_added", member=member.name, consumers=len(pool.members))
        settled = await pool.settled(SETTLE_TIMEOUT_S)
        if pool.partitions is None:  # a share-group member takes work a heartbeat after joining
            settled = await pool.all_working(SETTLE_TIMEOUT_S) and settled
        before = {name: m.completed for name, m in pool.members.items()}
        start_s = recorder.now()
        await asyncio.sleep(plan.step_s)
        window = window_latency(recorder.completions, start_s, recorder.now())
        idle = [name for name, m in pool.members.items() if m.completed == before.get(name, 0)]
        limit = consumers if pool.partitions is None else min(consumers, pool.partitions)
        steps.append(
            Step(
                consumers=consumers,
                settled=settled,
                tps=window["tps"],
                p99_ms=window["p99_ms"],
                idle_consumers=len(idle),
                without_partitions=(
                    sum(1 for m in pool.members.values() if not m.assigned)
                    if pool.observable
                    else None
                ),
                ideal_tps=consumers * plan.per_consumer_tps,
                expected_tps=limit * plan.per_consumer_tps,
            )
        )
    return steps


async def _resize(
    transport: Transport, pool: ConsumerPool, queue: str, plan: Plan, recorder: Recorder
) -> Resize:
    target = max(plan.steps)
    before = window_latency(recorder.completions, recorder.now() - plan.step_s, recorder.now())
    started_s = time.monotonic()
    now = await transport.resize(queue, target)
    call_ms = (time.monotonic() - started_s) * 1000
    recorder.event("partitions_resized", at_s=started_s, partitions=now, call_ms=round(call_ms, 1))
    if pool.partitions is not None:
        pool.partitions = now
    at_s = recorder.relative(started_s)
    await asyncio.sleep(plan.resize_window_s)
    end_s = recorder.now()
    times = [c.at_s for c in recorder.completions]
    pause_s, _ = longest_gap(times, at_s, end_s)
    finished = [
        e for e in recorder.events if e["kind"] == "rebalance_finished" and e["t_s"] >= at_s
    ]
    settled_s = float(finished[-1]["t_s"]) if finished else at_s
    after = window_latency(recorder.completions, max(settled_s, end_s - plan.step_s), end_s)
    return Resize(
        from_partitions=plan.partitions if pool.observable else None,
        to=now,
        call_ms=round(call_ms, 1),
        pause_ms=round(pause_s * 1000, 1),
        rebalances=sum(
            1 for e in recorder.events if e["kind"] == "rebalance_started" and e["t_s"] >= at_s
        ),
        settled_after_ms=round((settled_s - at_s) * 1000, 1) if finished else None,
        tps_before=before["tps"],
        tps_after=after["tps"],
    )


def steps_table(results: dict[str, TransportResult], plan: Plan) -> Table:
    rows = [
        [
            t,
            r.partitions,
            s.consumers,
            s.tps,
            s.expected_tps,
            s.ideal_tps,
            s.idle_consumers,
            s.without_partitions,
            s.p99_ms,
        ]
        for t, r in results.items()
        for s in r.steps
    ]
    return Table(
        "Throughput per consumer count",
        [
            "transport",
            "partitions",
            "consumers",
            "TPS",
            "expected TPS",
            "ideal TPS",
            "idle consumers",
            "without partitions",
            "p99 ms",
        ],
        rows,
        note=f"ideal = consumers x {plan.per_consumer_tps:g}/s; expected = min(consumers, "
        "partitions) x the same. Idle: consumers that completed nothing in the step.",
    )


def resize_table(results: dict[str, TransportResult]) -> Table:
    rows = [
        [
            t,
            r.resize.from_partitions,
            r.resize.to,
            r.resize.call_ms,
            r.resize.pause_ms,
            r.resize.rebalances,
            r.resize.settled_after_ms,
            r.resize.tps_before,
            r.resize.tps_after,
        ]
        for t, r in results.items()
    ]
    return Table(
        "Resizing under load",
        [
            "transport",
            "from",
            "to",
            "call ms",
            "pause ms",
            "rebalances",
            "settled after ms",
            "TPS before",
            "TPS after",
        ],
        rows,
        note="On brokers without partitions resize is a no-op: no pause, no change.",
    )


def steps_figure(results: dict[str, TransportResult], plan: Plan) -> BarFigure:
    return BarFigure(
        name="partition-limit-steps",
        title=f"TPS by consumers, {plan.partitions} partitions "
        f"({plan.per_consumer_tps:g}/s per consumer)",
        categories=[f"{c} consumers" for c in plan.steps],
        groups={t: [s.tps for s in r.steps] for t, r in results.items()},
        ylabel="TPS",
        reference=plan.partitions * plan.per_consumer_tps,
        reference_label="partition ceiling",
    )


def timeline_figure(transport: str, result: TransportResult) -> TimeFigure:
    series = result.series
    markers = [Marker(e["t_s"], e["kind"]) for e in result.events if e["kind"] in MARKED_EVENTS]
    return TimeFigure(
        name=f"partition-limit-{transport}",
        title=f"partition-limit on {transport}",
        panels=[
            Panel(
                "completions per second",
                "TPS",
                [Line("TPS", series["t_s"], series["tps"])],
                markers,
            ),
            Panel(
                "latency per interval",
                "ms",
                [
                    Line("p99", series["t_s"], series["p99_ms"]),
                    Line("p50", series["t_s"], series["p50_ms"], ":"),
                ],
                markers,
                log_y=True,
            ),
        ],
    )
