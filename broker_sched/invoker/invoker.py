"""The invoker: owns a machine's capacity and turns container requests into proxies.

It never handles activations itself — each container's proxy pulls those — so an
invoker's only inputs are its control queue (create/remove requests from controllers)
and its only outputs are replies to those requests and periodic heartbeats that tell
controllers how much room is left. Requests are acked after they are answered; an
invoker that dies mid-request leaves it to be redelivered to its successor.

Every delivery the invoker holds (activations its containers run, requests it answers)
is renewed on the beat of its heartbeat (:mod:`.leases`), so the broker hands it to
someone else only once the invoker stops beating.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from broker_sched.config import Settings
from broker_sched.errors import BrokerUnavailable, ConfigError, MalformedMessage, TransportError
from broker_sched.events import Timeline
from broker_sched.invoker.leases import Leases, renew_interval_s
from broker_sched.invoker.policy import invoker_side
from broker_sched.invoker.prewarm_pool import PrewarmPool
from broker_sched.invoker.proxy import ContainerProxy
from broker_sched.invoker.pulling import Puller
from broker_sched.invoker.retention import IdleTimes, may_leave
from broker_sched.metrics import InvokerMetrics
from broker_sched.model import (
    Action,
    ContainerReply,
    ContainerRequest,
    Heartbeat,
    decode,
    encode,
    fqn,
    new_id,
)
from broker_sched.runtime.base import (
    Container,
    ContainerCrashed,
    ContainerTimings,
    Runtime,
    StemCell,
)
from broker_sched.topology import HEARTBEATS, consumer_group, invoker_control_queue
from transports.base import Delivery, Transport

if TYPE_CHECKING:
    from broker_sched.invoker.drain import Drainer

log = logging.getLogger(__name__)


class Invoker:
    def __init__(
        self,
        *,
        transport: Transport,
        runtime: Runtime,
        settings: Settings,
        actions: dict[str, Action],
        invoker_id: str | None = None,
        timeline: Timeline | None = None,
        drain_transport: Transport | None = None,
    ) -> None:
        """``drain_transport``: the old transport for drain mode, connected by the caller
        (default: built from ``migration.drain_from`` when that is set)."""
        self.transport = transport
        self.runtime = runtime
        self.settings = settings
        self.actions = actions
        self.id = invoker_id or settings.invoker.id or new_id()[-8:]
        self.timeline = timeline if timeline is not None else Timeline()
        self.proxies: set[ContainerProxy] = set()
        self.metrics = InvokerMetrics()
        self.reserved_slots = 0
        self.reserved_memory_mb = 0
        self.idle_times = (
            IdleTimes(settings.keep_alive, settings.invoker.keep_alive_s)
            if settings.keep_alive.policy == "learned"
            else None
        )
        """Each action's learned keep-alive here; None under the fixed keep-alive."""
        self._group: anyio.abc.TaskGroup | None = None
        self.leases = Leases(
            renew_interval_s(settings.invoker.heartbeat_interval_s, transport.redelivery_window_s)
        )
        self.drainer: Drainer | None = None
        if settings.migration.drain_from is not None:
            from broker_sched.invoker.drain import Drainer

            self.drainer = Drainer(self, transport=drain_transport)
        if settings.prewarm.pools and not runtime.makes_stem_cells:
            raise ConfigError(
                f"prewarm.pools: the {runtime.name} runtime makes no stem cells; remove the pools"
            )
        self.prewarm = PrewarmPool(
            runtime=runtime,
            settings=settings.prewarm,
            free_room=lambda: (self.free_slots, self.free_memory_mb),
            timeline=self.timeline,
            invoker_id=self.id,
        )
        self.policy = invoker_side(self)
        if settings.prewarm.pools and not self.policy.takes_stem_cells:
            raise ConfigError(
                f"prewarm.pools: the {settings.policy} policy makes its own containers and "
                "takes none from a pool; remove the pools"
            )

    @property
    def control_queue(self) -> str:
        return invoker_control_queue(self.id)

    @property
    def free_slots(self) -> int:
        return self.settings.invoker.slots - len(self.proxies) - self.reserved_slots

    @property
    def free_memory_mb(self) -> int:
        used = sum(p.container.action.memory_mb for p in self.proxies)
        return self.settings.invoker.memory_mb - used - self.reserved_memory_mb

    def reserve(self, action: Action) -> bool:
        """Hold a slot and ``action``'s memory (for a container being made, or a drain
        container); False when there is no room."""
        if self.free_slots < 1 or self.free_memory_mb < action.memory_mb:
            return False
        self.reserved_slots += 1
        self.reserved_memory_mb += action.memory_mb
        return True

    def release(self, action: Action) -> None:
        self.reserved_slots -= 1
        self.reserved_memory_mb -= action.memory_mb

    def heartbeat(self) -> Heartbeat:
        return self.policy.heartbeat().model_copy(update=self.prewarm.report())

    async def serve(self) -> None:
        """Consume the control queue and beat until cancelled.

        Every task the invoker starts — request handlers, container proxies, the prewarm
        pool, the policy's loops, the drainer — runs in this one task group, so
        cancelling ``serve`` ends them all, and it returns only once each proxy has left
        its group and removed its container, and every stem cell is removed.
        """
        await self.transport.declare(self.control_queue)
        async with anyio.create_task_group() as group:
            self._group = group
            group.start_soon(self._beat)
            group.start_soon(self.leases.run)
            group.start_soon(self._consume_control)
            if self.prewarm.pools:
                group.start_soon(self.prewarm.run)
            for loop in self.policy.loops():
                group.start_soon(loop)
            if self.drainer is not None:
                group.start_soon(self.drainer.run)

    async def _beat(self) -> None:
        interval_s = self.settings.invoker.heartbeat_interval_s
        while True:
            with contextlib.suppress(BrokerUnavailable):
                await self.transport.send(HEARTBEATS, encode(self.heartbeat()))
            await anyio.sleep(interval_s)

    async def _consume_control(self) -> None:
        subscription = await self.transport.subscribe(
            self.control_queue, consumer_group(self.control_queue), self.id
        )
        puller = Puller(subscription, f"invoker {self.id}")
        async with subscription:
            while True:
                for delivery in await puller.fetch(16, 1.0):
                    self._spawn().start_soon(self._handle_request, delivery)

    def _spawn(self) -> anyio.abc.TaskGroup:
        """The task group of :meth:`serve`, which every task of this invoker runs in."""
        if self._group is None:
            raise RuntimeError(f"invoker {self.id} is not serving")
        return self._group

    async def _handle_request(self, delivery: Delivery) -> None:
        """Answer one request; a broker failure is logged, not raised into the task
        group (the request is redelivered when its ack never arrives)."""
        try:
            with self.leases.held(delivery):
                await self._answer_request(delivery)
        except TransportError as exc:
            log.warning("invoker %s: request %s not answered: %s", self.id, delivery.id, exc)

    async def _answer_request(self, delivery: Delivery) -> None:
        try:
            request = decode(ContainerRequest, delivery.body)
        except MalformedMessage as exc:
            await self.transport.dead_letter(self.control_queue, delivery.body, str(exc))
            await delivery.ack()
            return
        if request.kind == "remove":
            reply = await self.remove_container(request)
        else:
            reply = await self.create_container(request)
        if request.reply_to:
            with contextlib.suppress(BrokerUnavailable):
                await self.transport.send(request.reply_to, encode(reply))
        await delivery.ack()

    async def remove_container(self, request: ContainerRequest) -> ContainerReply:
        """Tell one container of the action to leave and answer once it has left.

        The longest idle goes first, then a paused one, then the least busy, which
        leaves after its current runs: nothing running is ever cut short.
        """
        name = fqn(request.namespace, request.action)
        candidates = [p for p in self.proxies if p.action == name and not p.leaving]
        if not candidates:
            return self._reply(
                request, ok=False, error=f"no container of {name!r} left on invoker {self.id}"
            )
        proxy = min(candidates, key=lambda p: (p.busy, not p.paused, -p.idle_s))
        proxy.stop(request.reason)
        await proxy.exited.wait()
        return self._reply(request, ok=True, container_id=proxy.container.id)

    def _reply(self, request: ContainerRequest, *, ok: bool, **fields: Any) -> ContainerReply:
        return ContainerReply(
            request_id=request.request_id,
            namespace=request.namespace,
            action=request.action,
            invoker_id=self.id,
            ok=ok,
            **fields,
        )

    async def create_container(self, request: ContainerRequest) -> ContainerReply:
        name = fqn(request.namespace, request.action)
        action = self.actions.get(name)

        def refuse(error: str) -> ContainerReply:
            return self._reply(request, ok=False, error=error)

        if action is None:
            return refuse(f"unknown action {name!r} on invoker {self.id}")
        cell = self.prewarm.take(action)
        if not self.reserve(action):
            if cell is not None:
                await cell.remove()
            return refuse(f"invoker {self.id} is full")
        started = time.monotonic()
        try:
            container, timings = await self._start_container(action, cell)
        except Exception as exc:
            log.warning("invoker %s: creating %s failed: %s", self.id, name, exc)
            return refuse(f"container create failed: {exc}")
        finally:
            self.release(action)
        proxy = ContainerProxy(
            transport=self.transport,
            container=container,
            timings=timings,
            queue=self.settings.queue_name(action.namespace, action.name),
            invoker_id=self.id,
            settings=self.settings.invoker,
            timeline=self.timeline,
            on_exit=self._proxy_exited,
            leases=self.leases,
            may_retire=self._may_retire,
        )
        self.proxies.add(proxy)
        self._spawn().start_soon(self._run_proxy, proxy)
        self.metrics.observe_cold_start(str(timings.start), timings.create_ms, timings.init_ms)
        self.timeline.record(
            "container_created",
            name,
            invoker=self.id,
            container=container.id,
            create_ms=timings.create_ms,
            init_ms=timings.init_ms,
            took_ms=(time.monotonic() - started) * 1000,
            start=str(timings.start),
        )
        return self._reply(
            request,
            ok=True,
            container_id=container.id,
            start=timings.start,
            create_ms=timings.create_ms,
            init_ms=timings.init_ms,
        )

    async def _run_proxy(self, proxy: ContainerProxy) -> None:
        """Run ``proxy``; its failure is its own, not the invoker's other containers'."""
        try:
            await proxy.run()
        except Exception:
            log.exception("invoker %s: proxy %s failed", self.id, proxy.container.id)
            self.proxies.discard(proxy)

    async def _start_container(
        self, action: Action, cell: StemCell | None
    ) -> tuple[Container, ContainerTimings]:
        """Initialise ``cell`` for ``action``, or cold-start when there is none or it
        fails (a stem cell that died waiting must not fail the request)."""
        if cell is not None:
            try:
                return await self.runtime.initialise(cell, action)
            except ContainerCrashed as exc:
                log.warning("invoker %s: stem cell %s unusable: %s", self.id, cell.id, exc)
        await self.prewarm.give_way()
        return await self.runtime.create(action)

    def _may_retire(self, proxy: ContainerProxy) -> bool:
        """The retention rules for an idle container; a leaver is marked at once."""
        same = [p for p in self.proxies if p.action == proxy.action]
        keep_alive_s = self.settings.invoker.keep_alive_s
        if self.idle_times is not None:
            self.idle_times.observe(proxy.action, max(p.last_used_s for p in same))
            keep_alive_s = self.idle_times.keep_alive_s(proxy.action)
        leave = may_leave(
            self.settings.retention,
            keep_alive_s=keep_alive_s,
            idle_s=proxy.idle_s,
            action_idle_s=min(p.idle_s for p in same) if same else proxy.idle_s,
            others=sum(1 for p in same if p is not proxy and not p.leaving),
        )
        if leave:
            proxy.stop("keep-alive expired")
        return leave

    def _proxy_exited(self, proxy: ContainerProxy) -> None:
        self.proxies.discard(proxy)
        self.timeline.record(
            "container_removed",
            proxy.action,
            invoker=self.id,
            container=proxy.container.id,
            runs=proxy.runs,
            reason=proxy.leave_reason,
        )
