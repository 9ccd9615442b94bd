"""The controller: the front door for invocations.

``invoke`` validates, asks the policy whether to admit it (throttled, or no capacity
that could be made), publishes the activation to the queue the policy names and — for
a blocking call — waits for the result on this controller's reply channel. It never
waits for a container: if none exists yet, the backlog monitor is poked and the
activation waits in the queue like any other.

Results are reported once per activation id even when at-least-once delivery runs an
activation twice (a crash after the run but before the ack): later copies are dropped.

The invoker that answers an activation keeps its record before acking it, so the
result on this controller's ephemeral channel is only the fast way to hear it: a
blocking caller whose result was lost (a broker that died before passing it on, or
sent while this controller's channel was down) is answered from the record when its
deadline comes, or as soon as the channel is back after an outage. This controller
writes only the records no invoker does: a sequence's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVarTuple, overload

import anyio
import anyio.abc
from pydantic import JsonValue

from broker_sched.config import Settings
from broker_sched.errors import (
    BrokerSchedError,
    BrokerUnavailable,
    InvocationTimeout,
    MalformedMessage,
    UnknownAction,
)
from broker_sched.events import Timeline
from broker_sched.model import (
    Action,
    ActivationResult,
    ContainerReply,
    Heartbeat,
    decode,
    encoded_activation,
    fqn,
    new_id,
    now_ms,
)
from broker_sched.records import ActivationRecords
from broker_sched.scheduler.cluster import ClusterView
from broker_sched.scheduler.leases import ShardLeases
from broker_sched.scheduler.monitor import BacklogMonitor
from broker_sched.scheduler.ownership import CLEANER_SHARD, gone_for, shard_of
from broker_sched.scheduler.policy import AcsController, controller_side
from broker_sched.scheduler.sequences import Sequences
from broker_sched.topology import (
    CONTROLLERS,
    HEARTBEATS,
    control_replies_channel,
    invoker_control_queue,
    results_channel,
)
from transports.base import Listener, Transport

log = logging.getLogger(__name__)

SpawnArgs = TypeVarTuple("SpawnArgs")

SEEN_RESULTS = 100_000
"""How many finished activation ids are remembered to drop duplicate results."""

CLOSE_TIMEOUT_S = 5.0
"""How long closing the listeners may hold up a shutdown."""

CLEAN_UP_AFTER_S = 300.0
"""The least silence after which a dead id's channels and queue are removed: a live
controller whose beats merely lag (a starved process, a slow channel) keeps its own."""

RECORD_READ_TIMEOUT_S = 5.0
"""How long a caller whose result did not come waits on top for its record."""


class Controller:
    def __init__(
        self,
        *,
        transport: Transport,
        settings: Settings,
        actions: dict[str, Action],
        controller_id: str | None = None,
        timeline: Timeline | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.transport = transport
        self.settings = settings
        self.actions = actions
        self.id = controller_id or settings.controller_id or new_id()[-8:]
        self.timeline = timeline if timeline is not None else Timeline()
        self.results_channel = results_channel(self.id)
        self.cluster = ClusterView(
            heartbeat_interval_s=settings.invoker.heartbeat_interval_s,
            expiry_beats=settings.scheduler.heartbeat_expiry_beats,
        )
        self.policy = controller_side(
            settings,
            transport=transport,
            actions=actions,
            cluster=self.cluster,
            reply_channel=control_replies_channel(self.id),
            timeline=self.timeline,
            rng=rng,
        )
        self.leases: ShardLeases | None = None
        """This controller's shards, when several controllers share the actions through
        the broker (the `acs` policy on a transport that keeps leases or assigns shards)."""
        monitor = self.monitor
        capabilities = transport.capabilities
        if monitor is not None and (capabilities.leases or capabilities.assigns_shards):
            self.leases = monitor.leases = ShardLeases(
                transport=transport,
                holder=self.id,
                shards=settings.scheduler.ownership_shards,
                ttl_s=settings.scheduler.lease_ttl_s,
                timeline=self.timeline,
                on_gained=self._adopt,
            )
        self.results: OrderedDict[str, ActivationResult] = OrderedDict()
        self.records = ActivationRecords(transport, settings.invoker.record_ttl_s)
        self.result_listeners: list[Callable[[ActivationResult], None]] = []
        """Called with each first result."""
        self._waiting: dict[str, tuple[str, asyncio.Future[ActivationResult]]] = {}
        """Blocking activation id -> its namespace, and the future its caller awaits."""
        self._declared: set[str] = set()
        self._ready = anyio.Event()
        self._group: anyio.abc.TaskGroup | None = None
        self.sequences = Sequences(self)

    async def serve(self) -> None:
        """Listen for results, replies and heartbeats and run the monitor until cancelled."""
        results = await self.transport.listen(self.results_channel)
        replies = await self.transport.listen(control_replies_channel(self.id))
        beats = await self.transport.listen(HEARTBEATS)
        listeners = [results, replies, beats]
        try:
            async with anyio.create_task_group() as group:
                self._group = group
                group.start_soon(self._drain, results, self._on_result, self._results_back)
                group.start_soon(self._drain, replies, self._on_reply)
                group.start_soon(self._drain, beats, self._on_heartbeat)
                if self.leases is not None:
                    peers = await self.transport.listen(CONTROLLERS)
                    listeners.append(peers)
                    group.start_soon(self.leases.run, peers)
                    group.start_soon(self._clean_up)
                for loop in self.policy.loops():
                    group.start_soon(loop)
                self._ready.set()
        finally:
            with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                if self.leases is not None:
                    with contextlib.suppress(Exception):
                        await self.leases.release_all()
                for listener in listeners:
                    with contextlib.suppress(Exception):
                        await listener.close()

    async def ready(self) -> None:
        await self._ready.wait()

    def controllers(self) -> int:
        """Live controllers sharing the cluster, this one included (1 without leases):
        what each controller's share of a namespace limit is cut by."""
        return 1 if self.leases is None else self.leases.live_controllers()

    async def _clean_up(self) -> None:
        """The owner of the cleaner shard removes what dead ids left: a controller's
        reply channels, an invoker's control queue. Only once an id has been silent
        longer than any activation's deadline and :data:`CLEAN_UP_AFTER_S`, so no
        answer is still on its way."""
        assert self.leases is not None
        leases = self.leases
        grace_s = max(
            CLEAN_UP_AFTER_S,
            self.settings.invocation_timeout_s + 2 * self.settings.scheduler.lease_ttl_s,
        )
        while True:
            await anyio.sleep(grace_s / 4)
            if CLEANER_SHARD not in leases.owned():
                continue
            now_s = time.monotonic()
            try:
                for peer in gone_for(leases.peers, now_s, grace_s):
                    for channel in (results_channel(peer), control_replies_channel(peer)):
                        await self.transport.delete_channel(channel)
                    del leases.peers[peer]
                    self.timeline.record("controller_cleaned", peer)
                for invoker_id in gone_for(self.cluster.departed, now_s, grace_s):
                    await self.transport.delete(invoker_control_queue(invoker_id))
                    del self.cluster.departed[invoker_id]
                    self.timeline.record("invoker_cleaned", invoker_id)
            except BrokerSchedError as exc:
                log.warning("controller %s: dead ids not cleaned up: %s", self.id, exc)

    def _adopt(self, shards: frozenset[int]) -> None:
        """Shards just taken (at start, or from a controller that died or handed them
        on): their actions are decided for here from the next tick."""
        monitor = self.monitor
        if monitor is None or self.leases is None:
            return
        count = self.leases.shards
        monitor.adopt(
            [
                action
                for action in self.actions.values()
                if not action.sequence and shard_of(action.fqn, count) in shards
            ]
        )
        if self._group is not None:
            self.spawn(monitor.seed_service_times, self.records)

    def spawn(
        self,
        func: Callable[[*SpawnArgs], Coroutine[Any, Any, None]],
        *args: *SpawnArgs,
    ) -> None:
        """Run ``func(*args)`` in the controller's task group, so that work outliving the
        call that started it (a non-blocking sequence, a pre-warm) ends with the controller.

        Its failure (a broker error while asking for a container, say) is logged: it must
        not end the controller's other tasks."""
        if self._group is None:
            raise RuntimeError(f"controller {self.id} is not serving")

        async def contained() -> None:
            try:
                await func(*args)
            except Exception:
                log.exception("controller %s: %s failed", self.id, func.__qualname__)

        self._group.start_soon(contained)

    @property
    def monitor(self) -> BacklogMonitor | None:
        """The backlog monitor of an `acs` controller (None under other policies)."""
        return self.policy.monitor if isinstance(self.policy, AcsController) else None

    @overload
    async def invoke(
        self,
        action: str,
        payload: JsonValue = None,
        *,
        blocking: Literal[True] = True,
        timeout_s: float | None = None,
        wait_s: float | None = None,
    ) -> ActivationResult: ...

    @overload
    async def invoke(
        self,
        action: str,
        payload: JsonValue = None,
        *,
        blocking: Literal[False],
        timeout_s: float | None = None,
        wait_s: float | None = None,
    ) -> str: ...

    async def invoke(
        self,
        action: str,
        payload: JsonValue = None,
        *,
        blocking: bool = True,
        timeout_s: float | None = None,
        wait_s: float | None = None,
    ) -> ActivationResult | str:
        """Run ``action`` ("name" or "namespace/name") with ``payload``.

        Blocking calls return the result; non-blocking ones return the activation id at
        once (the result is kept in :attr:`results`). Raises :class:`UnknownAction`,
        :class:`Throttled` (or :class:`NoCapacity`), :class:`PayloadTooLarge`,
        :class:`InvalidPayload`, :class:`BrokerUnavailable`, or :class:`InvocationTimeout`
        when no result arrives in ``timeout_s`` (the activation's deadline), or in
        ``wait_s`` when a blocking caller waits less than that: the activation then runs
        on, and the error names its id.
        """
        definition = self._lookup(action)
        payload = definition.with_parameters(payload)
        timeout_s = timeout_s or self.settings.invocation_timeout_s
        if definition.sequence:
            return await self.sequences.invoke(
                definition, payload, blocking=blocking, timeout_s=timeout_s
            )
        self.policy.admit(definition)
        activation, body = encoded_activation(
            definition.namespace,
            definition.name,
            payload,
            reply_to=self.results_channel,
            deadline_ms=now_ms() + int(timeout_s * 1000),
        )
        queue = self.policy.queue_for(definition, activation.id)
        if queue not in self._declared:
            await self.transport.declare(queue)
            self._declared.add(queue)
        waiter: asyncio.Future[ActivationResult] | None = None
        if blocking:
            waiter = asyncio.get_running_loop().create_future()
            self._waiting[activation.id] = (activation.namespace, waiter)
        try:
            await self.transport.publish(queue, body, key=activation.id)
        except BaseException:
            self._waiting.pop(activation.id, None)
            self.policy.release(activation.id)
            raise
        self.policy.on_published(definition)
        if waiter is None:
            return activation.id
        try:
            # Not anyio.fail_after: invoke runs in its caller's task (an HTTP handler, a
            # load generator), which anyio did not start, and a cancel scope there costs
            # more per activation than the rest of this method; the wait is on a future
            # of our own, so no client can swallow its cancellation.
            waited_s = timeout_s if wait_s is None else min(wait_s, timeout_s)
            async with asyncio.timeout(waited_s):
                return await waiter
        except TimeoutError:
            recorded = await self._recorded(activation.namespace, activation.id)
            if recorded is not None:
                return recorded
            if waited_s >= timeout_s:  # else the activation runs on; its result releases it
                self.policy.release(activation.id)
            raise InvocationTimeout(
                f"no result for {definition.fqn} activation {activation.id} in {waited_s:.1f} s",
                activation.id,
            ) from None
        finally:
            self._waiting.pop(activation.id, None)

    def _lookup(self, action: str) -> Action:
        name = action if "/" in action else fqn("guest", action)
        definition = self.actions.get(name)
        if definition is None:
            raise UnknownAction(name)
        return definition

    async def _drain(
        self,
        listener: Listener,
        handle: Callable[[bytes], None],
        back: Callable[[], None] | None = None,
    ) -> None:
        """Hand each message to ``handle``; ``back`` is called when the channel works
        again after the broker was unavailable."""
        down = False
        while True:
            try:
                body = await listener.receive(1.0)
            except BrokerUnavailable as exc:
                log.warning("controller %s: broker unavailable: %s", self.id, exc)
                down = True
                await anyio.sleep(1.0)
                continue
            if down and back is not None:
                back()
            down = False
            if body is None:
                continue
            try:
                handle(body)
            except MalformedMessage as exc:
                log.warning("controller %s: dropped a malformed message: %s", self.id, exc)

    def _results_back(self) -> None:
        """Results sent while the channel was down never come: read the records of
        the callers still waiting."""
        for activation_id, (namespace, _) in list(self._waiting.items()):
            self.spawn(self._settle_from_record, namespace, activation_id)

    async def _settle_from_record(self, namespace: str, activation_id: str) -> None:
        await self._recorded(namespace, activation_id)

    async def _recorded(self, namespace: str, activation_id: str) -> ActivationResult | None:
        """The activation's result from its record, reported as if heard (None: no
        record, or the store could not be read in time)."""
        if activation_id in self.results:
            return self.results[activation_id]
        try:
            async with asyncio.timeout(RECORD_READ_TIMEOUT_S):
                result = await self.records.get(namespace, activation_id)
        except (TimeoutError, BrokerSchedError) as exc:
            log.warning("controller %s: record %s not read: %r", self.id, activation_id, exc)
            return None
        if result is None:
            return None
        if activation_id not in self.results:  # unless it was heard meanwhile
            self._report(result)
        return self.results.get(activation_id)

    def _on_result(self, body: bytes) -> None:
        self._report(decode(ActivationResult, body))

    def _report(self, result: ActivationResult) -> None:
        if result.activation_id in self.results:
            self.timeline.record("duplicate_result", f"{result.namespace}/{result.action}")
            return
        self.results[result.activation_id] = result
        if len(self.results) > SEEN_RESULTS:
            self.results.popitem(last=False)
        self.policy.on_result(result)
        for listener in self.result_listeners:
            listener(result)
        self.policy.release(result.activation_id)
        waiting = self._waiting.get(result.activation_id)
        if waiting is not None and not waiting[1].done():
            waiting[1].set_result(result)

    def _on_reply(self, body: bytes) -> None:
        self.policy.on_reply(decode(ContainerReply, body))

    def _on_heartbeat(self, body: bytes) -> None:
        self.cluster.on_heartbeat(decode(Heartbeat, body))
