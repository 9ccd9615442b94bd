"""One scheduler cell: a full stack on one transport and policy under one load.

The stack (controller, invokers, simulated or process containers) runs in this process
on its own transport client, with queue names and invoker ids tagged per cell so cells
on a shared broker never see each other's leftovers; the cell deletes its queues when it
ends. Latency is measured by the caller of ``invoke``: publish, queue, container,
reply — everything a client would see.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import JsonValue

from broker_sched.bench.analysis import longest_gap
from broker_sched.bench.load import closed_loop, open_loop, stop_tasks
from broker_sched.bench.progress import Progress
from broker_sched.bench.recorder import Recorder, Summary, inline_summary
from broker_sched.bench.settings import derive, run_tag
from broker_sched.bench.workload import ActionClass, ActionsSpec, Cell, Workload
from broker_sched.config import Settings
from broker_sched.errors import BrokerSchedError, BrokerUnavailable, InvocationTimeout, Throttled
from broker_sched.events import Timeline
from broker_sched.model import Action
from broker_sched.scheduler.controller import Controller
from broker_sched.stack import Stack
from broker_sched.topology import consumer_group, invoker_work_queue
from transports.base import Transport
from transports.registry import transport_from_settings

log = logging.getLogger(__name__)

GRACE_S = 2.0
"""How long requests still in flight at the end of a cell may take before being cancelled."""
THROTTLE_BACKOFF_S = 0.05
"""A closed-loop user that was throttled (429) waits this long before its next request."""
SKIPPED_EVENTS = frozenset({"container_requested", "sample"})
"""Timeline events not copied into results (one per created container adds nothing)."""
CLEANUP_CONCURRENCY = 16
LISTED_CONTAINER_EVENTS = 300
"""Up to this many container events a cell lists each; above, only per-interval counts."""
CONTAINER_CHANGES = ("container_created", "container_removed", "container_evicted")
STEADY_PAUSE_S = 0.25
"""A stretch without any completion at least this long means the cell is not steady."""
SETTLE_POLL_S = 0.25
QUIESCE_TIMEOUT_S = 20.0
QUIESCE_POLL_S = 0.2


def cell_settings(
    base: Settings, workload: Workload, cell: Cell, tag: str, extra: Mapping[str, Any] | None = None
) -> Settings:
    run_ms = workload.actions.run_ms
    overrides: dict[str, Any] = {
        "transport": cell.transport,
        "policy": cell.policy,
        "runtime": workload.runtime,
        "queue_template": f"bench-{tag}-{{namespace}}-{{action}}",
        "invocation_timeout_s": workload.timeout_s,
        "invoker": {"slots": workload.slots, "id": f"bench{tag}-"},
        "simulated": {"run_ms": (run_ms, run_ms), "seed": workload.seed},
    }
    settings = derive(base, overrides)
    settings = derive(settings, workload.settings)
    return derive(settings, extra or {})


def bench_actions(workload: Workload, count: int) -> list[Action]:
    """Identical actions ``a000``, ``a001``, ...; or, with classes, ``short000``, ...,
    ``long000``, ... with each class's own settings. The simulated runtime ignores the
    handler."""
    specs: list[tuple[str, ActionsSpec | ActionClass]] = (
        [(f"{spec.name}{i:03d}", spec) for spec in workload.classes for i in range(spec.count)]
        if workload.classes
        else [(f"a{i:03d}", workload.actions) for i in range(count)]
    )
    return [
        Action(
            name=name,
            handler="broker_sched.samples:sleep",
            max_containers=spec.max_containers,
            concurrency=spec.concurrency,
            memory_mb=spec.memory_mb,
        )
        for name, spec in specs
    ]


class Picker:
    """Which action a request invokes and the payload that sets its run time.

    Without classes: uniformly at random, or pinned to the user; the run time is the
    workload's. With classes: a class by its traffic share, then one of its actions
    uniformly, and a run time drawn from the class's distribution (seeded), passed in
    the payload so both the simulated and the process runtime run that long.
    """

    def __init__(self, workload: Workload, actions: list[Action]) -> None:
        self.workload = workload
        self.rng = random.Random(workload.seed)
        self.names = [action.fqn for action in actions]
        self.by_class = [
            ([a.fqn for a in actions if a.name[:-3] == spec.name], spec.share, spec.run_ms)
            for spec in workload.classes
        ]
        self.weights = [share for _, share, _ in self.by_class]

    def pick(self, index: int) -> tuple[str, JsonValue, float]:
        """``(action, payload, intended run ms)`` for request or user ``index``."""
        if self.by_class:
            ((names, _, run), *_) = self.rng.choices(self.by_class, self.weights)
            run_ms = run.draw(self.rng)
            return self.rng.choice(names), self._payload(run_ms), run_ms
        if self.workload.actions.pick == "pinned":
            name = self.names[index % len(self.names)]
        else:
            name = self.rng.choice(self.names)
        run_ms = self.workload.actions.run_ms
        return name, self._payload(run_ms) if self.workload.runtime == "process" else None, run_ms

    def _payload(self, run_ms: float) -> JsonValue:
        key = "ms" if self.workload.runtime == "process" else "sleep_ms"
        return {key: round(run_ms, 3)}


async def run_cell(
    base: Settings,
    workload: Workload,
    cell: Cell,
    *,
    progress: Progress,
    extra_settings: Mapping[str, Any] | None = None,
) -> CellResult:
    """Run ``cell`` and return what it measured."""
    tag = run_tag()
    settings = cell_settings(base, workload, cell, tag, extra_settings)
    actions = bench_actions(workload, cell.actions)
    timeline = Timeline()
    transport = transport_from_settings(settings)
    async with transport:
        stack = Stack(
            settings,
            invokers=workload.invokers,
            actions={action.fqn: action for action in actions},
            transport=transport,
            timeline=timeline,
        )
        queues = [settings.queue_name(a.namespace, a.name) for a in actions]
        try:
            async with stack:
                for invoker in stack.invokers:
                    queues += [invoker.control_queue, invoker_work_queue(invoker.id)]
                recorder = await _drive(stack, workload, cell, actions, progress)
                await quiesce(stack, QUIESCE_TIMEOUT_S)
            recorder.timeline_events(
                timeline.events,
                skip=SKIPPED_EVENTS,
                tally=frozenset(CONTAINER_CHANGES),
                tally_only_above=LISTED_CONTAINER_EVENTS,
            )
        finally:
            await delete_queues(transport, queues)
    return _result(workload, cell, recorder, timeline)


async def _drive(
    stack: Stack, workload: Workload, cell: Cell, actions: list[Action], progress: Progress
) -> Recorder:
    assert stack.controller is not None
    settling = workload.settle_s > 0
    recorder = Recorder(
        max(workload.warmup_s, workload.max_warmup_s) if settling else workload.warmup_s,
        workload.duration_s,
        workload.interval_s,
    )

    def until() -> float:
        return recorder.t0_s + recorder.window_end_s

    picker = Picker(workload, actions)
    invocations = _Invocations(stack.controller, picker, workload.timeout_s, recorder)
    sampler = asyncio.create_task(_sample(stack, recorder))
    settler = asyncio.create_task(_settle(stack, workload, recorder)) if settling else None
    try:
        async with progress.showing(cell.label, recorder):
            if cell.users is not None:
                cancelled = await closed_loop(
                    cell.users, invocations.by_user, until=until, grace_s=GRACE_S
                )
            else:
                cancelled = await open_loop(
                    cell.rate_per_s or workload.rate_at,
                    invocations.on_schedule,
                    start_s=recorder.t0_s,
                    until=until,
                    grace_s=GRACE_S,
                )
    finally:
        await stop_tasks([sampler] if settler is None else [sampler, settler], grace_s=0.0)
    recorder.finish()
    if cancelled:
        recorder.errors["cancelled_at_end"] += cancelled
    return recorder


class _Invocations:
    """The load's requests: each one invocation through the controller, its outcome in
    the recorder."""

    def __init__(
        self, controller: Controller, picker: Picker, timeout_s: float, recorder: Recorder
    ) -> None:
        self.controller = controller
        self.picker = picker
        self.timeout_s = timeout_s
        self.recorder = recorder
        self.sent = 0

    async def by_user(self, user: int) -> None:
        """A closed-loop user backs off after a throttle rather than retrying at once."""
        if not await self.invoke(user, time.monotonic()):
            await asyncio.sleep(THROTTLE_BACKOFF_S)

    async def on_schedule(self, intended_s: float) -> None:
        """Open loop: latency counts from the intended send time, so a late send shows."""
        self.sent += 1
        await self.invoke(self.sent, intended_s)

    async def invoke(self, index: int, sent_s: float) -> bool:
        """One invocation; False when it was throttled."""
        action, payload, run_ms = self.picker.pick(index)
        recorder = self.recorder
        try:
            result = await self.controller.invoke(action, payload, timeout_s=self.timeout_s)
        except Throttled:
            recorder.fail("throttled")
            return False
        except InvocationTimeout:
            recorder.fail("timeout")
            return True
        except BrokerSchedError as exc:
            recorder.fail(type(exc).__name__)
            return True
        if result.ok:
            recorder.record(
                (time.monotonic() - sent_s) * 1000,
                start=str(result.start or "warm"),
                queue_wait_ms=result.wait_ms,
                action=action,
                run_ms=result.run_ms or run_ms,
            )
        else:
            recorder.fail(str(result.status))
        return True


async def _settle(stack: Stack, workload: Workload, recorder: Recorder) -> None:
    """End the warm-up once the cell is steady (see :attr:`Workload.settle_s`)."""
    changes = -1
    changed_at_s = 0.0
    while (now_s := recorder.now()) < recorder.warmup_s:
        counts = stack.timeline.counts
        current = sum(counts[kind] for kind in CONTAINER_CHANGES)
        if current != changes:
            changes, changed_at_s = current, now_s
        awaited = counts["container_requested"] - counts["container_created"]
        times = [c.at_s for c in recorder.completions[-10_000:]]
        pause_s, _ = longest_gap(times, now_s - workload.settle_s, now_s)
        steady = (
            now_s - changed_at_s >= workload.settle_s
            and awaited - counts["create_refused"] <= 0
            and pause_s < STEADY_PAUSE_S
        )
        if steady and now_s >= workload.warmup_s:
            recorder.warmup_s = now_s
            recorder.event("warmup_ended")
            return
        await asyncio.sleep(SETTLE_POLL_S)


def work_queues(stack: Stack) -> list[str]:
    """Where the cell's activations wait: per action (acs) or per invoker (sharding)."""
    assert stack.controller is not None
    return stack.controller.policy.work_queues(
        stack.actions.values(), [invoker.id for invoker in stack.invokers]
    )


async def backlog_total(stack: Stack) -> int | None:
    """Activations waiting or running in the cell's queues; None while the broker is away."""
    try:
        backlogs = await stack.transport.backlogs(
            [(q, consumer_group(q)) for q in work_queues(stack)]
        )
    except BrokerUnavailable:
        return None
    return sum(backlog.total for backlog in backlogs)


async def _sample(stack: Stack, recorder: Recorder) -> None:
    """Containers live and total backlog of the cell's queues, once per interval."""
    while True:
        backlog = await backlog_total(stack)
        values = {"containers": float(live_containers(stack))}
        if backlog is not None:
            values["backlog"] = float(backlog)
        recorder.sample(**values)
        await asyncio.sleep(recorder.interval_s)


async def quiesce(stack: Stack, timeout_s: float) -> None:
    """Wait until the cell's queues are empty (or ``timeout_s``), so that no results are
    still flowing when the stack stops and its queues are deleted."""
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        if await backlog_total(stack) == 0:
            return
        await asyncio.sleep(QUIESCE_POLL_S)


def live_containers(stack: Stack) -> int:
    return sum(invoker.policy.containers() for invoker in stack.invokers)


async def delete_queues(transport: Transport, queues: list[str]) -> None:
    """Best effort: a queue left behind wastes broker space but spoils no later run."""
    gate = asyncio.Semaphore(CLEANUP_CONCURRENCY)

    async def delete(queue: str) -> None:
        async with gate:
            try:
                await transport.delete(queue)
            except BrokerSchedError as exc:
                log.warning("bench: could not delete queue %s: %s", queue, exc)

    await asyncio.gather(*(delete(queue) for queue in queues))


@dataclass(frozen=True, slots=True)
class CellResult:
    """What one cell measured: its load, the latency and throughput in its window, the
    containers it made, and its series and events for the plots."""

    label: str
    transport: str
    policy: str
    actions: int
    users: int | None
    rate_per_s: float | None
    warmup_s: float
    duration_s: float
    summary: Summary
    warm_latency_ms: dict[str, float] | None
    cold_starts: int
    containers_created: int
    containers_evicted: int
    containers_peak: float
    event_counts: dict[str, int]
    series: dict[str, list[Any]]
    """Per interval: ``t_s``, ``tps``, ``p50_ms``, ``p99_ms``, then what was sampled
    (``containers``, ``backlog``) and tallied (None where nothing was)."""
    events: list[dict[str, Any]]
    events_dropped: int
    load_average: list[float]

    def to_json(self) -> dict[str, Any]:
        """As in ``results.json``: the cell's load, then its summary inline, then the rest."""
        return inline_summary(self)


def _result(workload: Workload, cell: Cell, recorder: Recorder, timeline: Timeline) -> CellResult:
    containers = [values["containers"] for _, values in recorder.samples if "containers" in values]
    warm = recorder.by_start.get("warm")
    return CellResult(
        label=cell.label,
        transport=cell.transport,
        policy=cell.policy,
        actions=cell.actions,
        users=cell.users,
        rate_per_s=cell.rate_per_s,
        warmup_s=round(recorder.warmup_s, 2),
        duration_s=workload.duration_s,
        summary=recorder.summary(),
        warm_latency_ms=warm.summary() if warm is not None else None,
        cold_starts=recorder.starts.get("cold", 0),
        containers_created=timeline.counts["container_created"],
        containers_evicted=timeline.counts["container_evicted"],
        containers_peak=max(containers, default=0),
        event_counts=dict(timeline.counts),
        series=recorder.series(),
        events=recorder.events,
        events_dropped=recorder.dropped_events,
        load_average=[round(value, 2) for value in os.getloadavg()],
    )
