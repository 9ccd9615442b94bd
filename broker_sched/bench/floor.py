"""`bench overhead`: the scheduled path against the best bare client loop, same run.

The floor is what a careful hand-written consumer on the same broker achieves: one
member fetches in batches (up to 64 messages in hand) and answers each message with the
transport's one-round-trip reply-and-ack without waiting for it before the next fetch,
while closed-loop callers publish a message the size of an encoded activation and await
its reply. The scheduled side is the whole stack (controller, backlog monitor, one
invoker, container proxies) with a noop action (simulated runtime, 0 ms runs and cold
starts) and the same callers, once its containers are warm. Both run in this process one
after the other, so CPU seconds per 1,000 activations (``time.process_time``) compare
like with like: the load generator is in both, the broker's own CPU is in neither.

The targets: at 50 callers the scheduled path keeps at least 0.7 of the floor's
throughput and at most 1.5 times its p50, and on the memory transport it serves at least
10,000 activations/s.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

from broker_sched.bench.cell import delete_queues
from broker_sched.bench.footprint import measure_footprint
from broker_sched.bench.load import stop_tasks
from broker_sched.bench.progress import Progress
from broker_sched.bench.report import Report, Table, Target, at_least, at_most
from broker_sched.bench.settings import derive, run_tag
from broker_sched.config import Settings
from broker_sched.errors import BrokerSchedError
from broker_sched.model import Activation, ActivationResult, Status, encode, now_ms
from broker_sched.stack import Stack
from broker_sched.topology import consumer_group
from transports.base import Listener, Subscription, Transport
from transports.registry import resolve, transport_from_settings

TPS_RATIO_GOAL = 0.7
P50_RATIO_GOAL = 1.5
MEMORY_TPS_GOAL = 10_000.0
TARGET_CALLERS = 50
REPLY_TIMEOUT_S = 10.0
BATCH = 64
"""The bare consumer's largest fetch: more than the callers, so it never limits them."""


@dataclass(frozen=True, slots=True)
class FloorPlan:
    callers: tuple[int, ...]
    warmup_s: float
    duration_s: float
    invoker_processes: tuple[int, ...]
    footprint_actions: int
    rebalance_warmup_s: float
    """Warm-up where members joining pause the group (Kafka): 32 joins take seconds."""

    def warmup_for(self, transport: str) -> float:
        if resolve(transport).capabilities.rebalances:
            return max(self.warmup_s, self.rebalance_warmup_s)
        return self.warmup_s


FULL = FloorPlan(
    (1, TARGET_CALLERS),
    warmup_s=2.0,
    duration_s=5.0,
    invoker_processes=(1, 2),
    footprint_actions=1_000,
    rebalance_warmup_s=10.0,
)
QUICK = FloorPlan(
    (1, TARGET_CALLERS),
    warmup_s=0.5,
    duration_s=1.0,
    invoker_processes=(),
    footprint_actions=100,
    rebalance_warmup_s=0.5,
)


@dataclass
class Window:
    """Latencies and CPU of the requests that finished inside the measured window."""

    start_s: float
    end_s: float
    latencies_ms: list[float]
    errors: int = 0
    cpu_start_s: float = 0.0
    cpu_end_s: float = 0.0

    def record(self, sent_s: float, done_s: float) -> None:
        if self.start_s <= sent_s and done_s <= self.end_s:
            self.latencies_ms.append((done_s - sent_s) * 1000)

    def summary(self) -> SideResult:
        ordered = sorted(self.latencies_ms)
        done = len(ordered)
        seconds = self.end_s - self.start_s
        cpu_s = self.cpu_end_s - self.cpu_start_s
        return SideResult(
            completed=done,
            errors=self.errors,
            tps=done / seconds if seconds > 0 else 0.0,
            p50_ms=_quantile(ordered, 0.5),
            p99_ms=_quantile(ordered, 0.99),
            cpu_s_per_1k=cpu_s / done * 1000 if done else None,
        )


@dataclass(frozen=True, slots=True)
class SideResult:
    """One side's measured window; the bare and scheduled sides compare field by field."""

    completed: int
    errors: int
    tps: float
    p50_ms: float | None
    """None, like the other quantiles and the CPU figure, when nothing completed."""
    p99_ms: float | None
    cpu_s_per_1k: float | None


@dataclass(frozen=True, slots=True)
class ScheduledResult(SideResult):
    containers: int
    """Warm at the end: how many the callers kept busy, which the bare side has no notion of."""


@dataclass(frozen=True, slots=True)
class FloorRow:
    """Both sides at one number of callers, and the ratios the targets are set on."""

    transport: str
    callers: int
    bare: SideResult
    scheduled: ScheduledResult
    tps_ratio: float | None
    p50_ratio: float | None
    cpu_ratio: float | None


def _quantile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def closed_loop_window(
    callers: int, call: Callable[[], Awaitable[None]], *, warmup_s: float, duration_s: float
) -> Window:
    """Run ``callers`` back-to-back callers for warm-up + duration; measure the latter."""
    start = time.monotonic() + warmup_s
    window = Window(start, start + duration_s, [])

    async def caller() -> None:
        while time.monotonic() < window.end_s:
            sent_s = time.monotonic()
            try:
                await call()
            except (BrokerSchedError, TimeoutError):
                window.errors += 1
                continue
            window.record(sent_s, time.monotonic())

    async def cpu_marks() -> None:
        await asyncio.sleep(max(0.0, window.start_s - time.monotonic()))
        window.cpu_start_s = time.process_time()
        await asyncio.sleep(max(0.0, window.end_s - time.monotonic()))
        window.cpu_end_s = time.process_time()

    marks = asyncio.create_task(cpu_marks())
    tasks = [asyncio.create_task(caller()) for _ in range(callers)]
    await asyncio.wait(tasks, timeout=warmup_s + duration_s + REPLY_TIMEOUT_S)
    await stop_tasks(tasks, grace_s=0.0)
    await marks
    return window


def sample_sizes() -> tuple[int, int]:
    """Bytes of an encoded noop activation and of its result, for the bare messages."""
    activation = Activation(
        namespace="guest", action="noop", reply_to="results-0123abcd", deadline_ms=now_ms()
    )
    result = ActivationResult(
        activation_id=activation.id,
        namespace="guest",
        action="noop",
        status=Status.SUCCESS,
        result={"ok": True},
        container_id="noop-sim-0123456789ab",
        invoker_id="0123abcd",
    )
    return len(encode(activation)), len(encode(result))


async def bare_side(
    settings: Settings, callers: int, *, warmup_s: float, duration_s: float
) -> SideResult:
    tag = run_tag()
    queue, channel = f"bench-{tag}-floor", f"bench-{tag}-floor-replies"
    transport = transport_from_settings(settings)
    waiting: dict[bytes, asyncio.Future[None]] = {}
    async with transport:
        await transport.declare(queue)
        subscription = await transport.subscribe(queue, consumer_group(queue), f"floor-{tag}")
        listener = await transport.listen(channel)
        tasks = [
            asyncio.create_task(_answer_batches(transport, subscription, channel)),
            asyncio.create_task(_dispatch(listener, waiting)),
        ]
        try:
            call = _bare_call(transport, queue, waiting)
            window = await closed_loop_window(
                callers, call, warmup_s=warmup_s, duration_s=duration_s
            )
            for task in tasks:
                if task.done():
                    task.result()
        finally:
            await stop_tasks(tasks, grace_s=0.0)
            await listener.close()
            await subscription.close()
            await delete_queues(transport, [queue])
    return window.summary()


def _bare_call(
    transport: Transport, queue: str, waiting: dict[bytes, asyncio.Future[None]]
) -> Callable[[], Awaitable[None]]:
    """A caller's request: a message the size of an activation, done when its reply is
    dispatched to ``waiting``."""
    request_bytes, _ = sample_sizes()

    async def call() -> None:
        message_id = uuid.uuid4().hex.encode()
        done = waiting[message_id] = asyncio.get_running_loop().create_future()
        try:
            body = message_id + b"\n" + b"x" * (request_bytes - len(message_id) - 1)
            await transport.publish(queue, body, key=None)
            async with asyncio.timeout(REPLY_TIMEOUT_S):
                await done
        finally:
            waiting.pop(message_id, None)

    return call


async def _answer_batches(transport: Transport, subscription: Subscription, channel: str) -> None:
    """Fetch the next batch while the last one's replies and acks are on the way."""
    _, reply_bytes = sample_sizes()
    answering: set[asyncio.Future[None]] = set()
    while True:
        free = BATCH - len(answering)
        if free <= 0:
            await asyncio.wait(answering, return_when=asyncio.FIRST_COMPLETED)
            continue
        for delivery in await subscription.fetch(free, 0.2):
            message_id = delivery.body.split(b"\n", 1)[0]
            reply = message_id + b"\n" + b"y" * (reply_bytes - len(message_id) - 1)
            task = asyncio.ensure_future(transport.reply_and_ack(delivery, channel, reply))
            answering.add(task)
            task.add_done_callback(answering.discard)


async def _dispatch(listener: Listener, waiting: dict[bytes, asyncio.Future[None]]) -> None:
    while True:
        body = await listener.receive(1.0)
        if body is None:
            continue
        done = waiting.get(body.split(b"\n", 1)[0])
        if done is not None and not done.done():
            done.set_result(None)


def scheduled_settings(base: Settings, transport: str, callers: int, action: str) -> Settings:
    """The whole stack with a noop action: 0 ms runs and cold starts, no pausing."""
    return derive(
        base,
        {
            "transport": transport,
            "runtime": "simulated",
            "queue_template": "{namespace}-{action}",
            "actions": [
                {
                    "name": action,
                    "handler": "noop",
                    "max_containers": max(callers, 1),
                    "timeout_s": 30.0,
                }
            ],
            "simulated": {
                "create_ms": [0.0, 0.0],
                "init_ms": [0.0, 0.0],
                "run_ms": [0.0, 0.0],
                "pause_ms": [0.0, 0.0],
                "resume_ms": [0.0, 0.0],
                "remove_ms": [0.0, 0.0],
            },
            "invoker": {"slots": max(callers, 1) + 8, "pause_grace_s": 60.0, "keep_alive_s": 60.0},
            "kafka": {"default_partitions": max(callers, 1)},
        },
    )


async def scheduled_side(
    base: Settings, transport: str, callers: int, *, warmup_s: float, duration_s: float
) -> ScheduledResult:
    action = f"noop-{run_tag()}"
    settings = scheduled_settings(base, transport, callers, action)
    async with Stack(settings) as stack:
        controller = stack.controller
        assert controller is not None

        async def call() -> None:
            result = await controller.invoke(action, None, timeout_s=REPLY_TIMEOUT_S)
            if not result.ok:
                raise BrokerSchedError(f"{result.status}: {result.error}")

        window = await closed_loop_window(callers, call, warmup_s=warmup_s, duration_s=duration_s)
        containers = sum(len(invoker.proxies) for invoker in stack.invokers)
    async with transport_from_settings(settings) as cleaner:
        await delete_queues(cleaner, [settings.queue_name("guest", action)])
    return ScheduledResult(**asdict(window.summary()), containers=containers)


async def measure_transport(
    base: Settings, transport: str, plan: FloorPlan, progress: Progress
) -> list[FloorRow]:
    settings = derive(base, {"transport": transport})
    rows = []
    for callers in plan.callers:
        bare = await bare_side(
            settings, callers, warmup_s=plan.warmup_s, duration_s=plan.duration_s
        )
        scheduled = await scheduled_side(
            base,
            transport,
            callers,
            warmup_s=plan.warmup_for(transport),
            duration_s=plan.duration_s,
        )
        progress.note(
            f"{transport} {callers} callers: bare {bare.tps:.0f}/s p50 "
            f"{bare.p50_ms or 0:.2f} ms; scheduled {scheduled.tps:.0f}/s p50 "
            f"{scheduled.p50_ms or 0:.2f} ms"
        )
        rows.append(
            FloorRow(
                transport=transport,
                callers=callers,
                bare=bare,
                scheduled=scheduled,
                tps_ratio=ratio(scheduled.tps, bare.tps),
                p50_ratio=ratio(scheduled.p50_ms, bare.p50_ms),
                cpu_ratio=ratio(scheduled.cpu_s_per_1k, bare.cpu_s_per_1k),
            )
        )
    return rows


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def floor_table(rows: list[FloorRow]) -> Table:
    return Table(
        "Scheduled path against the bare client loop (noop actions)",
        [
            "transport",
            "callers",
            "bare TPS",
            "bare p50 ms",
            "bare p99 ms",
            "bare CPU s/1k",
            "sched TPS",
            "sched p50 ms",
            "sched p99 ms",
            "sched CPU s/1k",
            "containers",
            "TPS ratio",
            "p50 ratio",
            "CPU ratio",
        ],
        [
            [
                r.transport,
                r.callers,
                r.bare.tps,
                r.bare.p50_ms,
                r.bare.p99_ms,
                r.bare.cpu_s_per_1k,
                r.scheduled.tps,
                r.scheduled.p50_ms,
                r.scheduled.p99_ms,
                r.scheduled.cpu_s_per_1k,
                r.scheduled.containers,
                r.tps_ratio,
                r.p50_ratio,
                r.cpu_ratio,
            ]
            for r in rows
        ],
        note=(
            "bare = one member holding up to 64 messages, each answered by one "
            "reply-and-ack call that the next fetch does not wait for; sched = "
            "controller.invoke() through the whole stack, one invoker, simulated 0 ms "
            "runs. CPU s/1k = this process's CPU seconds per 1,000 activations (load "
            "generator included on both sides, broker excluded)."
        ),
    )


def floor_targets(rows: list[FloorRow]) -> list[Target]:
    targets = []
    for row in rows:
        if row.callers != TARGET_CALLERS:
            continue
        transport = row.transport
        if transport == "memory":
            targets.append(
                at_least(
                    "memory: scheduled activations/s",
                    row.scheduled.tps,
                    MEMORY_TPS_GOAL,
                    "the path is CPU-bound in one Python process",
                )
            )
            continue
        targets += [
            at_least(
                f"{transport}: scheduled TPS ÷ bare TPS at {TARGET_CALLERS} callers",
                row.tps_ratio,
                TPS_RATIO_GOAL,
                "controller, invoker and callers share one core's worth of Python",
            ),
            at_most(
                f"{transport}: scheduled p50 ÷ bare p50 at {TARGET_CALLERS} callers",
                row.p50_ratio,
                P50_RATIO_GOAL,
                "the scheduled path has a hop per side the bare loop does not",
            ),
        ]
    return targets


async def run(base: Settings, transports: list[str], *, quick: bool, progress: Progress) -> Report:
    plan = QUICK if quick else FULL
    rows = [
        row
        for transport in transports
        for row in await measure_transport(base, transport, plan, progress)
    ]
    footprint = await measure_footprint(base, plan.footprint_actions)
    report = Report(
        scenario="overhead",
        title="overhead: the scheduled path against the best bare client loop",
        quick=quick,
        summary=(
            f"Closed-loop callers ({', '.join(map(str, plan.callers))}), "
            f"{plan.warmup_s:g} s warm-up, {plan.duration_s:g} s measured per side."
        ),
        data={"rows": [asdict(row) for row in rows], "footprint": asdict(footprint)},
    )
    report.tables.append(floor_table(rows))
    report.targets += floor_targets(rows)
    report.tables.append(
        Table(
            f"Memory at {footprint.actions:,} actions (memory transport, tracemalloc)",
            ["actions", "warm proxies", "bytes per warm proxy", "bytes per idle action queue"],
            [
                [
                    footprint.actions,
                    footprint.warm_proxies,
                    footprint.bytes_per_warm_proxy,
                    footprint.bytes_per_idle_queue,
                ]
            ],
            note=(
                "A warm proxy: its container, subscription and task; an idle queue: the "
                "queue and group (in the broker on a network transport) and the "
                "controller's per-action state."
            ),
        )
    )
    return report
