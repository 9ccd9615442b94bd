"""The backlog monitor: reads the broker's backlog and turns decisions into requests.

This is the loop that keeps container creation off the activation path. Every
``check_interval_s`` it reads the backlog of every active action in one batched call,
builds a :class:`Snapshot`, asks the pure :func:`decide` what to do, and sends create
requests to the invokers that placement picks. A first activation of an action with no
containers wakes it at once (the "poke") instead of waiting for the next tick.

With several controllers, each monitor decides only for the actions whose shard it owns
(:mod:`.leases`), and for all of them, whether or not it saw their traffic: an action
with a backlog and no invocations through this controller is read and served all the
same. The arrival rate comes from the broker's own count of appended messages
(``Backlog.appended``), so it is the whole cluster's, not this controller's share.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import anyio

from broker_sched.config import Settings
from broker_sched.errors import BrokerSchedError, BrokerUnavailable, NoCapacity, Throttled
from broker_sched.events import Timeline
from broker_sched.model import (
    Action,
    ActivationResult,
    ContainerReply,
    ContainerRequest,
    encode,
)
from broker_sched.records import ActivationRecords
from broker_sched.scheduler.cluster import ClusterView
from broker_sched.scheduler.decision import (
    ActionDecision,
    ActionState,
    Decision,
    Snapshot,
    decide,
)
from broker_sched.scheduler.leases import ShardLeases
from broker_sched.scheduler.ownership import shard_of
from broker_sched.scheduler.placement import InvokerView, place
from broker_sched.scheduler.prewarm import StepEstimate
from broker_sched.scheduler.rates import ArrivalRate, MovingAverage, WindowMax
from broker_sched.scheduler.reclaim import Eviction
from broker_sched.topology import consumer_group, invoker_control_queue
from transports.base import Backlog, Transport

log = logging.getLogger(__name__)

SEED_RECORDS = 50
"""Records read per namespace to seed an adopted action's service time."""


@dataclass(slots=True)
class ActionStats:
    """What the monitor has measured about one action."""

    action: Action
    queue: str
    arrivals: ArrivalRate
    run_s: MovingAverage
    cold_start_s: MovingAverage
    demand: WindowMax
    shard: int
    throttled: bool = False
    wait_s: float = 0.0
    last_active_s: float = field(default_factory=time.monotonic)
    last_resize_s: float | None = None
    last_scale_in_s: float | None = None
    backlog_since_s: float | None = None
    backlog: Backlog = field(default_factory=lambda: Backlog(0, 0))
    appended: int | None = None
    """The broker's appended count at the last read that had one; once known, arrivals
    are counted from its growth instead of this controller's own invocations."""


class BacklogMonitor:
    def __init__(
        self,
        *,
        transport: Transport,
        settings: Settings,
        actions: dict[str, Action],
        cluster: ClusterView,
        controller_reply_channel: str,
        timeline: Timeline,
        rng: random.Random | None = None,
        leases: ShardLeases | None = None,
    ) -> None:
        self.transport = transport
        self.leases = leases
        """The shards this controller decides for (None: every action, alone)."""
        self.settings = settings
        self.actions = actions
        self.cluster = cluster
        self.reply_channel = controller_reply_channel
        self.timeline = timeline
        self.rng = rng or random.Random()
        self.stats: dict[str, ActionStats] = {}
        self.last_decision: Decision | None = None
        self.rules_decided: Counter[str] = Counter()
        """Per-action decisions of every tick so far, by rule (for the metrics)."""
        self.room = True
        """Whether an action with no container could get one (the last tick's verdict)."""
        self._wake = anyio.Event()
        self._seeding: list[ActionStats] = []
        self.warmed_ready_s: dict[str, float | None] = {}
        """Pre-warm requests (:meth:`prewarm`) by id: when their container was ready."""

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
                demand=WindowMax(scheduler.stable_window_s),
                shard=shard_of(action.fqn, scheduler.ownership_shards),
            )
        return stats

    def admit(self, action: Action) -> None:
        """Raise :class:`Throttled` or :class:`NoCapacity` if ``action`` must be
        rejected now rather than queued.

        No capacity is the last tick's verdict, checked against the free slots now: a
        slot freed since then, or invokers not heard from yet, never reject.
        """
        stats = self.stats.get(action.fqn)
        if stats is not None and stats.throttled:
            raise Throttled(action.fqn, stats.wait_s, self.settings.scheduler.max_wait_s)
        name = action.fqn
        if (
            not self.room
            and self.cluster.free_slots() == 0
            and self.cluster.live()
            and not self.cluster.running(name) + self.cluster.creating(name)
        ):
            raise NoCapacity(name)

    def on_invoke(self, action: Action) -> None:
        stats = self.track(action)
        now_s = time.monotonic()
        if stats.appended is None:
            stats.arrivals.record(now_s)
        stats.last_active_s = now_s
        if self.cluster.running(action.fqn) + self.cluster.creating(action.fqn) == 0 and self._owns(
            stats
        ):
            self._wake.set()

    def adopt(self, actions: list[Action]) -> None:
        """Start deciding for ``actions`` (their shard was just taken over): read their
        backlog from the next tick, which comes at once, and seed the service times of
        those not measured here from their records."""
        now_s = time.monotonic()
        unmeasured: list[ActionStats] = []
        for action in actions:
            stats = self.track(action)
            stats.last_active_s = now_s
            if stats.run_s.value is None:
                unmeasured.append(stats)
        self._wake.set()
        if unmeasured:
            self._seeding.extend(unmeasured)

    async def seed_service_times(self, records: ActivationRecords) -> None:
        """Service times of adopted actions from their latest records, so a new owner
        sizes capacity at once instead of relearning from its own results."""
        while self._seeding:
            stats = self._seeding.pop()
            if stats.run_s.value is not None:
                continue
            try:
                recent = await records.recent(stats.action.namespace, SEED_RECORDS)
            except BrokerSchedError as exc:
                log.warning("service times of %s not read: %s", stats.action.fqn, exc)
                continue
            for result in reversed(recent):
                if result.action == stats.action.name:
                    self.on_result(result)

    def on_result(self, result: ActivationResult) -> None:
        """Feed d: the container's service time, or the run time from a proxy that
        does not report one."""
        stats = self.stats.get(f"{result.namespace}/{result.action}")
        took_ms = result.service_ms or result.run_ms
        if stats is not None and took_ms > 0:
            stats.run_s.add(took_ms / 1000)

    def on_reply(self, reply: ContainerReply) -> None:
        if reply.request_id in self.warmed_ready_s and reply.ok:
            self.warmed_ready_s[reply.request_id] = time.monotonic()
        request = self.cluster.on_reply(reply)
        stats = self.stats.get(f"{reply.namespace}/{reply.action}")
        if stats is None or request is None:
            return
        if reply.ok:
            stats.cold_start_s.add((reply.create_ms + reply.init_ms) / 1000)
        else:
            self.timeline.record("create_refused", stats.action.fqn, error=reply.error)

    def estimate(self, action: Action) -> StepEstimate:
        """What is known of ``action`` for timing a sequence's pre-warming."""
        stats = self.stats.get(action.fqn)
        name = action.fqn
        return StepEstimate(
            action=name,
            run_s=None if stats is None else stats.run_s.value,
            cold_starts_s=() if stats is None else stats.cold_start_s.samples,
            warm=bool(self.cluster.running(name) + self.cluster.creating(name)),
        )

    async def prewarm(self, action: Action, reason: str) -> str | None:
        """Ask for a container of ``action`` ahead of its work (a sequence's later step);
        the request's id, or None when one is up or on its way, or none fits. When it is
        answered, :attr:`warmed_ready_s` has when (None: refused)."""
        stats = self.track(action)
        stats.last_active_s = time.monotonic()
        if not self._owns(stats):
            return None
        if self.cluster.running(action.fqn) + self.cluster.creating(action.fqn):
            return None
        request_id = await self._request_container(stats, reason, self.cluster.views())
        if request_id is not None:
            self.warmed_ready_s[request_id] = None
        return request_id

    async def release(self, action: Action, reason: str) -> bool:
        """Tell one container of ``action`` to leave (a warmed step that never ran);
        False when none is known."""
        leavers = self._leavers(action.fqn, 1)
        if not leavers or not self._owns(self.track(action)):
            return False
        await self._request_removal(action, leavers[0], reason)
        return True

    def _owns(self, stats: ActionStats) -> bool:
        """Whether this controller decides for the action now: only its owner asks for
        or removes its containers, a sequence's pre-warming included."""
        return self.leases is None or stats.shard in self.leases.owned()

    async def run(self) -> None:
        interval_s = self.settings.scheduler.check_interval_s
        while True:
            with anyio.move_on_after(interval_s):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self.tick()
            except BrokerUnavailable as exc:
                log.warning("backlog monitor: broker unavailable: %s", exc)

    async def tick(self) -> Decision:
        now_s = time.monotonic()
        self.cluster.expire_requests(self.settings.scheduler.create_timeout_s)
        active = self._active(now_s)
        backlogs = await self.transport.backlogs(
            [(s.queue, consumer_group(s.queue)) for s in active]
        )
        for stats, backlog in zip(active, backlogs, strict=True):
            stats.backlog = backlog
            if backlog.appended is not None:
                if stats.appended is not None and backlog.appended > stats.appended:
                    stats.arrivals.record(now_s, backlog.appended - stats.appended)
                stats.appended = backlog.appended
            if backlog.total:
                stats.last_active_s = now_s
            if not backlog.pending:
                stats.backlog_since_s = None
            elif stats.backlog_since_s is None:
                stats.backlog_since_s = now_s
        live = [stats for stats in active if self._live(stats, now_s)]
        snapshot = Snapshot(
            now_s=now_s,
            actions=tuple(self._state(stats, now_s) for stats in live),
            free_slots=self.cluster.free_slots(),
            idle=tuple(self.cluster.idle()),
            freeing_slots=self.cluster.freeing_slots(),
        )
        decision = decide(snapshot, self.settings.scheduler)
        self.last_decision = decision
        self.rules_decided.update(decided.rule for decided in decision.actions)
        self.room = decision.room
        invokers = self.cluster.views()
        for eviction in decision.evictions:
            await self._evict(eviction)
        for action_decision in decision.actions:
            stats = self.stats[action_decision.action]
            stats.demand.add(now_s, action_decision.needed)
            await self._act(stats, action_decision, invokers)
        return decision

    def _active(self, now_s: float) -> list[ActionStats]:
        """The actions whose backlog this tick reads: with ownership, every action this
        controller owns (a backlog is served even with no traffic through here) and none
        it does not; without, those :meth:`_live` keeps."""
        if self.leases is None:
            return [stats for stats in self.stats.values() if self._live(stats, now_s)]
        if len(self.stats) < len(self.actions):
            for action in self.actions.values():
                if not action.sequence and action.fqn not in self.stats:
                    self.track(action)
        owned = self.leases.owned()
        return [stats for stats in self.stats.values() if stats.shard in owned]

    def _live(self, stats: ActionStats, now_s: float) -> bool:
        """Seen lately, or with containers or creations: the actions decided for."""
        linger_s = self.settings.invoker.keep_alive_s + 5 * self.settings.scheduler.check_interval_s
        name = stats.action.fqn
        return (
            now_s - stats.last_active_s <= linger_s
            or bool(self.cluster.running(name))
            or bool(self.cluster.creating(name))
        )

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
            stable_demand=stats.demand.value(now_s),
            last_scale_in_s=stats.last_scale_in_s,
            backlog_since_s=stats.backlog_since_s,
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
        if decided.remove:
            stats.last_scale_in_s = time.monotonic()
            for invoker_id in self._leavers(name, decided.remove):
                await self._request_removal(stats.action, invoker_id, decided.reason)

    def _leavers(self, action: str, count: int) -> list[str]:
        """The invokers whose containers of ``action`` leave: where they idle longest
        first, then where the action has the most."""
        idle = sorted(
            (group for group in self.cluster.idle() if group.action == action),
            key=lambda group: -group.idle_s,
        )
        chosen: list[str] = []
        for group in idle:
            chosen += [group.invoker_id] * group.count
        for invoker_id, containers in self.cluster.hosts(action):
            chosen += [invoker_id] * containers
        return chosen[:count]

    async def _evict(self, eviction: Eviction) -> None:
        action = self.actions.get(eviction.action)
        if action is None:
            log.warning("cannot evict %s: not an action this controller knows", eviction.action)
            return
        for _ in range(eviction.count):
            await self._request_removal(action, eviction.invoker_id, eviction.reason)
        self.timeline.record(
            "container_evicted",
            eviction.action,
            invoker=eviction.invoker_id,
            count=eviction.count,
            reason=eviction.reason,
        )

    async def _request_removal(self, action: Action, invoker_id: str, reason: str) -> None:
        request = ContainerRequest(
            kind="remove",
            namespace=action.namespace,
            action=action.name,
            memory_mb=action.memory_mb,
            reply_to=self.reply_channel,
            reason=reason,
        )
        self.cluster.on_removal(request.request_id, action.fqn, invoker_id)
        await self.transport.publish(invoker_control_queue(invoker_id), encode(request))
        self.timeline.record(
            "container_leave_requested", action.fqn, invoker=invoker_id, reason=reason
        )

    async def _request_container(
        self, stats: ActionStats, reason: str, invokers: dict[str, InvokerView]
    ) -> str | None:
        """Ask the roomiest invoker for a container, and count the room as taken; the
        request's id, or None when no invoker has room.

        Paused containers are not offered to placement: their proxies still pull from
        the queue and resume themselves, so they are already part of what exists.
        """
        action = stats.action
        placement = place(invokers.values(), action.fqn, action.memory_mb, self.rng)
        if placement is None:
            self.timeline.record("no_capacity", action.fqn)
            return None
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
        return request.request_id
