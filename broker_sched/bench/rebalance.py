"""rebalance: what adding and removing consumers costs while a queue is under load.

Consumers are driven at the transport level (one subscription each; see
:mod:`~broker_sched.bench.consumers`) so membership changes happen exactly when planned.
An open-loop publisher sends at a steady rate to one queue with ``partitions``
partitions; each message carries its intended send time, so a consumer measures its
latency, including any time the queue spent without an owner. Planned operations:
add a consumer, add another, restart one (close and rejoin under the same name), remove
one. Per operation: the *pause* (the longest stretch without any completion, from the
operation until the next one) and the p99 against the steady state before the first.

On classic Kafka every join and leave is an eager rebalance: all members give up all
partitions and wait for the group to re-form, so consumption pauses. With static
membership (``kafka.group_instance_id``) a restart rejoins without a rebalance, but a
member that leaves is noticed only after ``session_timeout_ms``, and its partitions wait
until then. With KIP-848 (``kip848``: ``kafka.group_protocol = "consumer"``) the broker
moves only the partitions that change owner, at the members' heartbeats. A share group
(``kafka-share``), Redis Streams and NATS JetStream have no partitions to hand around:
the same operations should show no pause at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from broker_sched.bench.analysis import longest_gap, ratio, window_latency
from broker_sched.bench.consumers import ConsumerPool, settled_pool
from broker_sched.bench.context import BenchContext
from broker_sched.bench.load import open_loop, stop_tasks
from broker_sched.bench.plots import Line, Marker, Panel, TimeFigure
from broker_sched.bench.recorder import Completion, Recorder, Summary
from broker_sched.bench.report import Report, Table
from broker_sched.bench.settings import run_tag
from broker_sched.errors import BrokerSchedError
from broker_sched.topology import consumer_group
from transports.base import Transport

Operation = Literal["add", "restart", "remove"]
PADDING = b"x" * 200
GRACE_S = 3.0
DRAIN_S = 5.0
"""After the load, how long messages still queued may take before they count as unfinished."""
MARKED_EVENTS = (
    "consumer_added",
    "consumer_removed",
    "consumer_restarted",
    "rebalance_started",
    "rebalance_finished",
)


@dataclass(frozen=True, slots=True)
class Plan:
    partitions: int
    initial_consumers: int
    rate_per_s: float
    run_ms: float
    warmup_s: float
    operations: tuple[tuple[float, Operation], ...]
    end_s: float
    interval_s: float


FULL = Plan(
    partitions=6,
    initial_consumers=2,
    rate_per_s=200.0,
    run_ms=5.0,
    warmup_s=5.0,
    operations=((5.0, "add"), (15.0, "add"), (25.0, "restart"), (35.0, "remove")),
    end_s=48.0,
    interval_s=0.25,
)
QUICK = Plan(
    partitions=4,
    initial_consumers=2,
    rate_per_s=100.0,
    run_ms=5.0,
    warmup_s=1.5,
    operations=((1.5, "add"), (4.5, "remove")),
    end_s=7.5,
    interval_s=0.25,
)
EVENT_OF: dict[Operation, str] = {
    "add": "consumer_added",
    "restart": "consumer_restarted",
    "remove": "consumer_removed",
}


KIP848 = {"kafka": {"group_protocol": "consumer"}}
"""The Kafka transport on the KIP-848 group protocol instead of classic eager rebalances."""


def variants(ctx: BenchContext, transport: str, tag: str) -> list[tuple[str, dict[str, Any]]]:
    """Dynamic membership everywhere; where members rebalance, static membership and the
    KIP-848 protocol too (share groups and the other brokers have neither)."""
    found: list[tuple[str, dict[str, Any]]] = [("dynamic", {})]
    if ctx.transport(transport).capabilities.rebalances:
        found.append(("static", {"kafka": {"group_instance_id": f"bench-{tag}-{{member}}"}}))
        found.append(("kip848", KIP848))
    return found


@dataclass(frozen=True, slots=True)
class OperationResult:
    """One operation, over the messages sent until the next one."""

    operation: Operation
    t_s: float
    consumers: int | None
    """After the operation; None if its event was not recorded."""
    pause_ms: float
    pause_from_s: float
    p99_ms: float
    max_ms: float
    p99_spike: float | None
    """``p99_ms`` over the steady state's: the delay the operation added."""
    rebalances: int
    rebalance_ms: float | None
    """None where nothing rebalanced (every broker but Kafka)."""


@dataclass(frozen=True, slots=True)
class VariantResult:
    """One transport with one kind of group membership, through the plan's operations."""

    transport: str
    membership: str
    partitions: int
    rate_per_s: float
    steady: dict[str, float]
    """Before the first operation: :func:`window_latency`'s figures and ``pause_ms``."""
    operations: list[OperationResult]
    summary: Summary
    series: dict[str, list[Any]]
    events: list[dict[str, Any]]
    published: int
    unfinished: int
    """Published but never consumed: a partition still without an owner at the end."""
    duplicates: int

    def to_json(self) -> dict[str, Any]:
        """As in ``results.json``: the recorder's summary inline, after the operations."""
        return {
            "transport": self.transport,
            "membership": self.membership,
            "partitions": self.partitions,
            "rate_per_s": self.rate_per_s,
            "steady": self.steady,
            "operations": [asdict(operation) for operation in self.operations],
            **self.summary.to_json(),
            "series": self.series,
            "events": self.events,
            "published": self.published,
            "unfinished": self.unfinished,
            "duplicates": self.duplicates,
        }


async def run(ctx: BenchContext) -> Report:
    plan = QUICK if ctx.quick else FULL
    runs: list[VariantResult] = []
    for transport in ctx.transports:
        tag = run_tag()
        for membership, overrides in variants(ctx, transport, tag):
            result = await run_variant(ctx, transport, membership, overrides, plan)
            runs.append(result)
            pauses = ", ".join(f"{op.operation} {op.pause_ms:.0f} ms" for op in result.operations)
            ctx.progress.note(f"rebalance {transport} ({membership}): pauses {pauses}")
    report = Report(
        scenario="rebalance",
        title="rebalance: consumption pauses when consumers join and leave",
        quick=ctx.quick,
        summary=(
            f"One queue with {plan.partitions} partitions (where the broker has them), "
            f"{plan.rate_per_s:g} messages/s open loop, {plan.run_ms:g} ms per message, "
            f"{plan.initial_consumers} consumers to start; operations at "
            + ", ".join(f"{op} @{at:g}s" for at, op in plan.operations)
            + f" after a {plan.warmup_s:g} s steady state. Pause: the longest stretch with "
            "no completion from the operation to the next; normal gap ≈ "
            f"{1000 / plan.rate_per_s:.0f} ms."
        ),
        data={"plan": plan_json(plan), "transports": _by_transport(runs)},
    )
    report.tables.append(operations_table(runs))
    report.tables.append(steady_table(runs))
    report.figures += [variant_figure(result, plan) for result in runs]
    return report


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "partitions": plan.partitions,
        "initial_consumers": plan.initial_consumers,
        "rate_per_s": plan.rate_per_s,
        "run_ms": plan.run_ms,
        "warmup_s": plan.warmup_s,
        "operations": [{"at_s": at, "operation": op} for at, op in plan.operations],
        "end_s": plan.end_s,
    }


def _by_transport(runs: list[VariantResult]) -> dict[str, dict[str, dict[str, Any]]]:
    grouped: dict[str, dict[str, dict[str, Any]]] = {}
    for result in runs:
        grouped.setdefault(result.transport, {})[result.membership] = result.to_json()
    return grouped


async def run_variant(
    ctx: BenchContext,
    transport_name: str,
    membership: str,
    overrides: dict[str, Any],
    plan: Plan,
) -> VariantResult:
    transport = ctx.transport(transport_name, overrides)
    queue = f"bench-{run_tag()}-rebalance"
    recorder = Recorder(plan.warmup_s, plan.end_s - plan.warmup_s, plan.interval_s)
    flow = _Flow(transport, queue, recorder)
    async with (
        transport,
        settled_pool(
            transport,
            queue,
            partitions=plan.partitions,
            consumers=plan.initial_consumers,
            run_ms=plan.run_ms,
            handle=flow.consumed,
            recorder=recorder,
        ) as pool,
    ):
        recorder.events.clear()
        operator = asyncio.create_task(_operate(pool, plan, recorder))
        sampler = asyncio.create_task(_sample(transport, queue, pool, recorder))
        try:
            async with ctx.progress.showing(f"rebalance {transport_name} {membership}", recorder):
                await open_loop(
                    plan.rate_per_s,
                    flow.publish,
                    start_s=recorder.t0_s,
                    until=lambda: recorder.t0_s + plan.end_s,
                    grace_s=GRACE_S,
                )
                await operator
                await flow.drain()
        finally:
            await stop_tasks([operator, sampler], grace_s=0.0)
        recorder.finish()
    steady, operations = analyse(plan, recorder)
    return VariantResult(
        transport=transport_name,
        membership=membership,
        partitions=plan.partitions,
        rate_per_s=plan.rate_per_s,
        steady=steady,
        operations=operations,
        summary=recorder.summary(),
        series=recorder.series(),
        events=recorder.events,
        published=flow.published,
        unfinished=flow.published - len(recorder.completions),
        duplicates=flow.duplicates,
    )


class _Flow:
    """The open loop's messages, stamped with their intended send time, and their
    consumption: at-least-once, so a message redelivered after a rebalance is counted
    once and tallied as a duplicate."""

    def __init__(self, transport: Transport, queue: str, recorder: Recorder) -> None:
        self.transport = transport
        self.queue = queue
        self.recorder = recorder
        self.published = 0
        self.duplicates = 0
        self.seen: set[bytes] = set()
        self.publishing_done = False
        self.drained = asyncio.Event()

    async def publish(self, intended_s: float) -> None:
        try:
            await self.transport.publish(self.queue, f"{intended_s:.6f}\n".encode() + PADDING)
        except BrokerSchedError as exc:
            self.recorder.fail(type(exc).__name__)
            return
        self.published += 1

    async def consumed(self, body: bytes) -> None:
        stamp = body.split(b"\n", 1)[0]
        if stamp in self.seen:
            self.duplicates += 1
            return
        self.seen.add(stamp)
        self.recorder.record((time.monotonic() - float(stamp)) * 1000)
        if self.publishing_done and len(self.recorder.completions) >= self.published:
            self.drained.set()

    async def drain(self) -> None:
        """Once the load has ended, wait (a while) for what is still on its way."""
        self.publishing_done = True
        if len(self.recorder.completions) < self.published:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drained.wait(), DRAIN_S)


async def _sample(transport: Transport, queue: str, pool: ConsumerPool, recorder: Recorder) -> None:
    """Backlog and consumers once per interval: a stalled partition shows as a growing
    backlog even while the other partitions keep completing."""
    while True:
        values = {"consumers": float(len(pool.members))}
        with contextlib.suppress(BrokerSchedError):
            values["backlog"] = float((await transport.backlog(queue, consumer_group(queue))).total)
        recorder.sample(**values)
        await asyncio.sleep(recorder.interval_s)


async def _operate(pool: ConsumerPool, plan: Plan, recorder: Recorder) -> None:
    """Run the plan's operations at their times, alongside the load."""
    for at_s, operation in plan.operations:
        delay_s = recorder.t0_s + at_s - time.monotonic()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        started_s = time.monotonic()
        if operation == "add":
            name = (await pool.add()).name
        elif operation == "restart":
            name = await pool.restart()
        else:
            name = await pool.remove()
        recorder.event(
            EVENT_OF[operation],
            at_s=started_s,
            member=name,
            consumers=len(pool.members),
            took_ms=round((time.monotonic() - started_s) * 1000, 1),
        )


def analyse(plan: Plan, recorder: Recorder) -> tuple[dict[str, float], list[OperationResult]]:
    """Per operation, over the messages *sent* until the next operation (a message delayed
    by an operation may complete after the next one) and the completions in that time."""
    times = [c.at_s for c in recorder.completions]
    by_send_time = sorted(
        (Completion(c.at_s - c.latency_ms / 1000, c.latency_ms) for c in recorder.completions),
        key=lambda c: c.at_s,
    )
    first_op_s = plan.operations[0][0] if plan.operations else plan.end_s
    steady = window_latency(by_send_time, 0.0, first_op_s)
    steady["pause_ms"] = round(longest_gap(times, 0.0, first_op_s)[0] * 1000, 1)
    operations = []
    bounds = [at for at, _ in plan.operations[1:]] + [plan.end_s]
    for (at_s, operation), until_s in zip(plan.operations, bounds, strict=True):
        window = window_latency(by_send_time, at_s, until_s)
        pause_s, pause_from_s = longest_gap(times, at_s, until_s)
        started = [
            e
            for e in recorder.events
            if e["kind"] == "rebalance_started" and at_s <= e["t_s"] < until_s
        ]
        finished = [
            e for e in recorder.events if e["kind"] == "rebalance_finished" and at_s <= e["t_s"]
        ]
        operations.append(
            OperationResult(
                operation=operation,
                t_s=at_s,
                consumers=next(
                    (
                        e["detail"]["consumers"]
                        for e in recorder.events
                        if e["kind"] == EVENT_OF[operation] and e["t_s"] >= at_s
                    ),
                    None,
                ),
                pause_ms=round(pause_s * 1000, 1),
                pause_from_s=round(pause_from_s, 3),
                p99_ms=window["p99_ms"],
                max_ms=window["max_ms"],
                p99_spike=ratio(window["p99_ms"], steady["p99_ms"]),
                rebalances=len(started),
                rebalance_ms=finished[0]["detail"]["took_ms"] if started and finished else None,
            )
        )
    return steady, operations


def operations_table(runs: list[VariantResult]) -> Table:
    rows = [
        [
            result.transport,
            result.membership,
            op.operation,
            op.t_s,
            op.consumers,
            op.pause_ms,
            op.p99_ms,
            op.p99_spike,
            op.max_ms,
            op.rebalances,
            op.rebalance_ms,
        ]
        for result in runs
        for op in result.operations
    ]
    return Table(
        "Per operation: stop, delays and rebalances until the next operation",
        [
            "transport",
            "membership",
            "operation",
            "at s",
            "consumers after",
            "full stop ms",
            "p99 ms",
            "p99 ÷ steady",
            "max delay ms",
            "rebalances",
            "rebalance ms",
        ],
        rows,
        note="Windows cover the messages sent from the operation until the next one. full stop: "
        "the longest stretch in which no message at all completed. max delay: the longest any "
        "message waited from its intended send time — a partition without an owner delays "
        "its messages while the others carry on. rebalance ms: from the first revocation "
        "until every partition had an owner again (Kafka only).",
    )


def steady_table(runs: list[VariantResult]) -> Table:
    rows = [
        [
            r.transport,
            r.membership,
            r.steady["tps"],
            r.steady["p50_ms"],
            r.steady["p99_ms"],
            r.steady["pause_ms"],
            r.summary.latency_ms["p99"],
            r.summary.latency_ms["max"],
            r.published,
            r.unfinished,
            r.duplicates,
        ]
        for r in runs
    ]
    return Table(
        "Steady state before the first operation, and the whole run",
        [
            "transport",
            "membership",
            "TPS",
            "p50 ms",
            "p99 ms",
            "longest gap ms",
            "run p99 ms",
            "run max ms",
            "published",
            "unfinished",
            "duplicates",
        ],
        rows,
        note="unfinished: published but not consumed within "
        f"{DRAIN_S:g} s after the load ended (a partition still without an owner). "
        "duplicates: consumed twice (at-least-once: acked but not yet committed when the "
        "partition moved).",
    )


def variant_figure(result: VariantResult, plan: Plan) -> TimeFigure:
    series = result.series
    markers = [Marker(e["t_s"], e["kind"]) for e in result.events if e["kind"] in MARKED_EVENTS]
    latency = Panel(
        title="latency per interval (from intended send time)",
        ylabel="ms",
        lines=[
            Line("p99", series["t_s"], series["p99_ms"]),
            Line("p50", series["t_s"], series["p50_ms"], ":"),
        ],
        markers=markers,
        log_y=True,
    )
    throughput = Panel(
        title=f"completions per second (offered: {plan.rate_per_s:g}/s) and backlog",
        ylabel="messages/s, messages",
        lines=[Line("completed/s", series["t_s"], series["tps"])],
        markers=markers,
    )
    if "backlog" in series:
        throughput.lines.append(
            Line("backlog", series["t_s"], series["backlog"], "-", "tab:orange")
        )
    name = f"rebalance-{result.transport}-{result.membership}"
    return TimeFigure(
        name=name,
        title=f"rebalance on {result.transport} ({result.membership} membership)",
        panels=[latency, throughput],
    )
