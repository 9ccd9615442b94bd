"""The backlog monitor: reads the broker's backlog and turns decisions into requests.

This is the loop that keeps container creation off the activation path. Every
``check_interval_s`` it reads the backlog of every active action in one batched call,
builds a :class:`Snapshot`, asks the pure :func:`decide` what to do, and sends create
requests to the invokers that placement picks. A first activation of an action with no
containers wakes it at once (the "poke") instead of waiting for the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field, replace

from broker_sched.config import Settings
from broker_sched.errors import BrokerUnavailable
from broker_sched.events import Timeline
from broker_sched.model import (
    Action,
    ActivationResult,
    ContainerReply,
    ContainerRequest,
    encode,
)
from broker_sched.scheduler.cluster import ClusterView
from broker_sched.scheduler.decision import (
    ActionDecision,
    ActionState,
    Decision,
    Snapshot,
    decide,
)
from broker_sched.scheduler.placement import InvokerView, place
from broker_sched.scheduler.rates import ArrivalRate, MovingAverage
from broker_sched.topology import invoker_control_queue
from transports.base import Backlog, Transport, raise_if_cancelling

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ActionStats:
    """What the monitor has measured about one action."""

    action: Action
    queue: str
    arrivals: ArrivalRate
    run_s: MovingAverage
    cold_start_s: MovingAverage
    throttled: bool = False
    wait_s: float = 0.0
    last_active_s: float = field(default_factory=time.monotonic)
    last_resize_s: float | None = None
    backlog: Backlog = field(default_factory=lambda: Backlog(0, 0))


class BacklogMonitor:
    def __init__(
        self,
        *,
        transport: Transport,
        settings: Settings,
        cluster: ClusterView,
        controller_reply_channel: str,
        timeline: Timeline,
        rng: random.Random | None = None,
    ) -> None:
        self.transport = transport
        self.settings = settings
        self.cluster = cluster
        self.reply_channel = controller_reply_channel
        self.timeline = timeline
        self.rng = rng or random.Random()
        self.stats: dict[str, ActionStats] = {}
        self.last_decision: Decision | None = None
        self._wake = asyncio.Event()

    def track(self, action: Action) -> ActionStats:
        stats = self.stats.get(action.fqn)
        if stats is None:
            scheduler = self.settings.scheduler
            stats = self.stats[action.fqn] = ActionStats(
                action=action,
                queue=self.settings.queue_name(action.namespace, action.name),
                arrivals=ArrivalRate(scheduler.arrival_window_s),
                run_s=MovingAverage(scheduler.run_time_samples),
                cold_start_s=MovingAverage(scheduler.run_time_samples),
            )
        return stats

    def on_invoke(self, action: Action) -> None:
        stats = self.track(action)
        now_s = time.monotonic()
        stats.arrivals.record(now_s)
        stats.last_active_s = now_s
        if self.cluster.running(action.fqn) + self.cluster.creating(action.fqn) == 0:
            self._wake.set()

    def on_result(self, result: ActivationResult) -> None:
        stats = self.stats.get(f"{result.namespace}/{result.action}")
        if stats is not None and result.run_ms > 0:
            stats.run_s.add(result.run_ms / 1000)

    def on_reply(self, reply: ContainerReply) -> None:
        request = self.cluster.on_reply(reply)
        stats = self.stats.get(f"{reply.namespace}/{reply.action}")
        if stats is None or request is None:
            return
        if reply.ok:
            stats.cold_start_s.add((reply.create_ms + reply.init_ms) / 1000)
        else:
            self.timeline.record("create_refused", stats.action.fqn, error=reply.error)

    def is_throttled(self, action: str) -> bool:
        stats = self.stats.get(action)
        return stats is not None and stats.throttled

    async def run(self) -> None:
        interval_s = self.settings.scheduler.check_interval_s
        while True:
            raise_if_cancelling()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.tick()
            except BrokerUnavailable as exc:
                log.warning("backlog monitor: broker unavailable: %s", exc)

    async def tick(self) -> Decision:
        now_s = time.monotonic()
        self.cluster.expire_requests(self.settings.scheduler.create_timeout_s)
        active = self._active(now_s)
        backlogs = await self.transport.backlogs([(s.queue, s.queue) for s in active])
        for stats, backlog in zip(active, backlogs, strict=True):
            stats.backlog = backlog
            if backlog.total:
                stats.last_active_s = now_s
        snapshot = Snapshot(
            now_s=now_s,
            actions=tuple(self._state(stats, now_s) for stats in active),
            free_slots=self.cluster.free_slots(),
        )
        decision = decide(snapshot, self.settings.scheduler)
        self.last_decision = decision
        invokers = {
            beat.invoker_id: InvokerView(beat.invoker_id, beat.free_slots, beat.free_memory_mb)
            for beat in self.cluster.live()
        }
        for action_decision in decision.actions:
            await self._act(self.stats[action_decision.action], action_decision, invokers)
        return decision

    def _active(self, now_s: float) -> list[ActionStats]:
        linger_s = self.settings.invoker.keep_alive_s + 5 * self.settings.scheduler.check_interval_s
        return [
            stats
            for name, stats in self.stats.items()
            if now_s - stats.last_active_s <= linger_s
            or self.cluster.running(name)
            or self.cluster.creating(name)
        ]

    def _state(self, stats: ActionStats, now_s: float) -> ActionState:
        name = stats.action.fqn
        partitioned = self.transport.capabilities.partitioned
        return ActionState(
            action=name,
            pending=stats.backlog.pending,
            in_flight=stats.backlog.in_flight,
            arrival_rate_per_s=stats.arrivals.rate_per_s(now_s),
            running=self.cluster.running(name),
            creating=self.cluster.creating(name),
            mean_run_s=stats.run_s.value,
            concurrency=stats.action.concurrency,
            cold_start_s=stats.cold_start_s.value,
            limit=stats.action.max_containers,
            partitions=stats.backlog.partitions if partitioned else None,
            throttled=stats.throttled,
            last_resize_s=stats.last_resize_s,
        )

    async def _act(
        self, stats: ActionStats, decided: ActionDecision, invokers: dict[str, InvokerView]
    ) -> None:
        name = stats.action.fqn
        stats.wait_s = decided.wait_s
        if decided.throttled != stats.throttled:
            stats.throttled = decided.throttled
            self.timeline.record(
                "throttle_on" if decided.throttled else "throttle_off", name, reason=decided.reason
            )
        if decided.resize_partitions_to is not None:
            stats.last_resize_s = time.monotonic()
            now = await self.transport.resize(stats.queue, decided.resize_partitions_to)
            self.timeline.record("partitions_resized", name, partitions=now)
        for _ in range(decided.create):
            if not await self._request_container(stats, decided.reason, invokers):
                break

    async def _request_container(
        self, stats: ActionStats, reason: str, invokers: dict[str, InvokerView]
    ) -> bool:
        """Ask the roomiest invoker for a container, and count the room as taken.

        Paused containers are not offered to placement: their proxies still pull from
        the queue and resume themselves, so they are already part of what exists.
        """
        action = stats.action
        placement = place(invokers.values(), action.fqn, action.memory_mb, self.rng)
        if placement is None:
            self.timeline.record("no_capacity", action.fqn)
            return False
        chosen = invokers[placement.invoker_id]
        invokers[placement.invoker_id] = replace(
            chosen,
            free_slots=chosen.free_slots - 1,
            free_memory_mb=chosen.free_memory_mb - action.memory_mb,
        )
        request = ContainerRequest(
            kind="create",
            namespace=action.namespace,
            action=action.name,
            memory_mb=action.memory_mb,
            reply_to=self.reply_channel,
        )
        self.cluster.on_request(request.request_id, action.fqn, placement.invoker_id)
        await self.transport.publish(invoker_control_queue(placement.invoker_id), encode(request))
        self.timeline.record(
            "container_requested", action.fqn, invoker=placement.invoker_id, reason=reason
        )
        return True
