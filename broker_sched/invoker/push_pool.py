"""The baseline invoker of the `sharding` policy: a container pool fed by push.

Activations arrive on the invoker's own work queue, already placed by the controller's
hash. The pool runs each on a free warm container of the same action; else cold-starts
one if a slot is free; else evicts the least-recently-used idle container of another
action and cold-starts in its place; else the activation waits for a container to free
up. This is the behaviour that makes busy actions sharing a home invoker evict each
other, modelled so both policies run on the same transports, runtimes and metrics; once
it has a container, an activation runs by the rules of :mod:`.run_activation`, as in a
container proxy.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field

import anyio
import anyio.abc

from broker_sched.config import Settings
from broker_sched.errors import TransportError
from broker_sched.events import Timeline
from broker_sched.invoker.leases import Leases
from broker_sched.invoker.pulling import Puller
from broker_sched.invoker.replies import answer
from broker_sched.invoker.run_activation import accept, give_back, run_activation
from broker_sched.metrics import InvokerMetrics
from broker_sched.model import Action, Start, Status, now_ms
from broker_sched.runtime.base import Container, ContainerCrashed, Runtime
from broker_sched.topology import consumer_group
from transports.base import Delivery, Transport

log = logging.getLogger(__name__)

REMOVE_TIMEOUT_S = 10.0
"""How long removing one container may hold up the pool's shutdown."""


@dataclass(eq=False)
class _Slot:
    container: Container
    last_used_s: float = field(default_factory=time.monotonic)
    busy: bool = False


class PushPool:
    def __init__(
        self,
        *,
        transport: Transport,
        runtime: Runtime,
        settings: Settings,
        actions: dict[str, Action],
        invoker_id: str,
        work_queue: str,
        timeline: Timeline,
        leases: Leases,
        metrics: InvokerMetrics | None = None,
    ) -> None:
        """``leases``: the invoker's, which keeps each delivery from redelivery while it
        runs. ``metrics``: the invoker's, where its cold starts are observed (metrics of its
        own when none is given, as for a bare pool in a benchmark)."""
        self.transport = transport
        self.leases = leases
        self.runtime = runtime
        self.settings = settings
        self.actions = actions
        self.invoker_id = invoker_id
        self.work_queue = work_queue
        self.timeline = timeline
        self.metrics = metrics or InvokerMetrics()
        self.slots: list[_Slot] = []
        self.creating = 0
        self._freed = anyio.Condition()
        self._group: anyio.abc.TaskGroup | None = None

    @property
    def capacity(self) -> int:
        return self.settings.invoker.slots

    @property
    def record_ttl_s(self) -> float:
        return self.settings.invoker.record_ttl_s

    def containers_by_action(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for slot in self.slots:
            counts[slot.container.action.fqn] = counts.get(slot.container.action.fqn, 0) + 1
        return counts

    async def serve(self) -> None:
        await self.transport.declare(self.work_queue)
        subscription = await self.transport.subscribe(
            self.work_queue, consumer_group(self.work_queue), self.invoker_id
        )
        puller = Puller(subscription, f"push pool {self.invoker_id}")
        try:
            async with subscription, anyio.create_task_group() as group:
                self._group = group
                while True:
                    for delivery in await puller.fetch(32, 0.5):
                        group.start_soon(self._handle, delivery)
                    await self._retire_idle()
        finally:
            with anyio.CancelScope(shield=True):
                for slot in self.slots:
                    with anyio.move_on_after(REMOVE_TIMEOUT_S), contextlib.suppress(Exception):
                        await slot.container.remove()

    async def _handle(self, delivery: Delivery) -> None:
        """Run one delivery; a broker failure is logged, not raised into the pool's task
        group (the broker redelivers what was never acked)."""
        try:
            with self.leases.held(delivery):
                await self._run(delivery)
        except TransportError as exc:
            log.warning("push pool %s: %s not finished: %s", self.invoker_id, delivery.id, exc)

    async def _run(self, delivery: Delivery) -> None:
        accepted = await accept(
            self.transport,
            self.work_queue,
            delivery,
            invoker_id=self.invoker_id,
            record_ttl_s=self.record_ttl_s,
        )
        if accepted is None:
            return
        activation, _ = accepted
        action = self.actions.get(activation.fqn)
        if action is None:
            await answer(
                self.transport,
                delivery,
                activation,
                Status.SYSTEM_ERROR,
                invoker_id=self.invoker_id,
                record_ttl_s=self.record_ttl_s,
                error=f"unknown action {activation.fqn!r}",
            )
            return
        slot, start, init_ms = await self._acquire(action)
        # Received once it has a container: the wait for a slot is this policy's queue.
        received_ms = now_ms()
        try:
            if start is Start.RESUMED:
                await slot.container.resume()
            await run_activation(
                self.transport,
                delivery,
                activation,
                slot.container,
                received_ms=received_ms,
                start=start,
                init_ms=init_ms,
                invoker_id=self.invoker_id,
                record_ttl_s=self.record_ttl_s,
            )
        except ContainerCrashed as exc:
            await self._discard(slot)
            log.warning("push pool %s: container crashed: %s", self.invoker_id, exc)
            await give_back(
                self.transport,
                delivery,
                str(exc),
                invoker_id=self.invoker_id,
                record_ttl_s=self.record_ttl_s,
                container_id=slot.container.id,
            )
            return
        if slot.container.alive:
            await self._release(slot)
        else:
            await self._discard(slot)

    async def _acquire(self, action: Action) -> tuple[_Slot, Start, float]:
        """A container for ``action``: warm, else cold, else evict, else wait."""
        async with self._freed:
            while True:
                warm = [s for s in self.slots if not s.busy and s.container.action == action]
                if warm:
                    slot = max(warm, key=lambda s: s.last_used_s)
                    slot.busy = True
                    return slot, Start.RESUMED if slot.container.paused else Start.WARM, 0.0
                if len(self.slots) + self.creating < self.capacity:
                    break
                idle = [s for s in self.slots if not s.busy]
                if idle:
                    victim = min(idle, key=lambda s: s.last_used_s)
                    self.slots.remove(victim)
                    self.timeline.record(
                        "container_evicted", victim.container.action.fqn, by=action.fqn
                    )
                    self._spawn().start_soon(self._remove, victim)
                    break
                await self._freed.wait()
            self.creating += 1
        try:
            container, timings = await self.runtime.create(action)
        finally:
            self.creating -= 1
        self.metrics.observe_cold_start(str(Start.COLD), timings.create_ms, timings.init_ms)
        self.timeline.record(
            "container_created",
            action.fqn,
            invoker=self.invoker_id,
            create_ms=timings.create_ms,
            init_ms=timings.init_ms,
        )
        slot = _Slot(container, busy=True)
        self.slots.append(slot)
        return slot, Start.COLD, timings.create_ms + timings.init_ms

    def _spawn(self) -> anyio.abc.TaskGroup:
        if self._group is None:
            raise RuntimeError(f"push pool {self.invoker_id} is not serving")
        return self._group

    async def _release(self, slot: _Slot) -> None:
        async with self._freed:
            slot.busy = False
            slot.last_used_s = time.monotonic()
            self._freed.notify_all()

    async def _discard(self, slot: _Slot) -> None:
        async with self._freed:
            if slot in self.slots:
                self.slots.remove(slot)
            self._freed.notify_all()
        await self._remove(slot)

    async def _remove(self, slot: _Slot) -> None:
        with contextlib.suppress(Exception):
            await slot.container.remove()
        self.timeline.record("container_removed", slot.container.action.fqn)

    async def _retire_idle(self) -> None:
        """Pause, then remove, containers idle past the grace and the keep-alive."""
        now_s = time.monotonic()
        invoker = self.settings.invoker
        expired: list[_Slot] = []
        async with self._freed:
            for slot in [s for s in self.slots if not s.busy]:
                idle_s = now_s - slot.last_used_s
                if idle_s >= invoker.keep_alive_s:
                    self.slots.remove(slot)
                    expired.append(slot)
                elif idle_s >= invoker.pause_grace_s and not slot.container.paused:
                    with contextlib.suppress(Exception):
                        await slot.container.pause()
        for slot in expired:
            await self._remove(slot)
