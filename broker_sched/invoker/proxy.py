"""The container proxy: one per container, pulling its action's queue.

The proxy is what makes scheduling location-free: it joins the action's consumer group
from wherever its container runs and takes work when the container is free. Nothing
ever pushes an activation to a particular container.

Lifecycle: fetch → (resume if paused) → run → send the result → ack, by the rules of
:mod:`.run_activation`, which the ``sharding`` push pool follows too.
Idle past ``pause_grace_s`` → pause the container; idle past ``keep_alive_s`` → leave
the group and remove the container (scale to zero). A controller may also tell it to
leave (central scale-in, eviction): it then finishes its current runs first.

Each result carries ``service_ms``, what this activation cost the container: from the
fetch that brought it to its answer, plus how long the previous reply-and-ack took
(this one's is under way while the result travels). The scheduler sizes capacity by
it, since for fast handlers the run is the smallest part.

Pauses and resumes are recorded on the timeline with the milliseconds they took, and a
resumed run reports its resume as ``init_ms``: that is what the activation waited for,
as a cold one waits for create + init (or, published while the container was being
made, the part of it still to go). A first activation published after its container
was ready waited for nothing: it is a warm start.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

import anyio

from broker_sched.config import InvokerSettings
from broker_sched.errors import TransportError
from broker_sched.events import Timeline
from broker_sched.invoker.leases import Leases
from broker_sched.invoker.pulling import Puller
from broker_sched.invoker.run_activation import accept, give_back, run_activation
from broker_sched.model import Start, now_ms
from broker_sched.runtime.base import Container, ContainerCrashed, ContainerTimings
from broker_sched.topology import consumer_group
from transports.base import Delivery, Transport

log = logging.getLogger(__name__)

CLEANUP_TIMEOUT_S = 10.0
"""How long leaving the group, and then removing the container, may each take once the
proxy stops; a shutdown waits for both (shielded from its own cancellation)."""


class ContainerProxy:
    def __init__(
        self,
        *,
        transport: Transport,
        container: Container,
        timings: ContainerTimings,
        queue: str,
        invoker_id: str,
        settings: InvokerSettings,
        timeline: Timeline,
        on_exit: Callable[[ContainerProxy], None],
        leases: Leases,
        may_retire: Callable[[ContainerProxy], bool] | None = None,
    ) -> None:
        """``leases``: the invoker's, which keeps each delivery from redelivery while it
        runs; ``may_retire``: whether this idle container leaves now (the invoker's
        retention rules); default: once idle for ``keep_alive_s``."""
        self.transport = transport
        self.container = container
        self.queue = queue
        self.invoker_id = invoker_id
        self.settings = settings
        self.timeline = timeline
        self.on_exit = on_exit
        self.leases = leases
        self._may_retire = may_retire
        self.busy = 0
        self.runs = 0
        self.last_used_s = time.monotonic()
        self._cold_init_ms: float | None = timings.create_ms + timings.init_ms
        self._first_start = timings.start
        self._ready_ms = now_ms()
        self._last_answer_ms = 0.0
        self._stopping = anyio.Event()
        self._run_finished = anyio.Event()
        self.leave_reason = ""
        self.exited = anyio.Event()
        """Set once the proxy has left its group and its container is removed."""

    @property
    def action(self) -> str:
        return self.container.action.fqn

    @property
    def paused(self) -> bool:
        return self.container.paused

    @property
    def leaving(self) -> bool:
        return self._stopping.is_set()

    @property
    def idle_s(self) -> float:
        """How long the container has had no work (0 while busy)."""
        return 0.0 if self.busy else time.monotonic() - self.last_used_s

    def stop(self, reason: str = "") -> None:
        """Ask the proxy to leave after its current runs (used for removal requests)."""
        if not self._stopping.is_set():
            self.leave_reason = reason
        self._stopping.set()

    async def run(self) -> None:
        """Pull and run until stopped or retired; cancelled, the runs under way are
        abandoned unacked, and closing the subscription gives their work back.

        A container that runs one activation at a time runs it in this task: a task per
        activation costs more than a fast handler's whole run.
        """
        concurrency = self.container.action.concurrency
        subscription = await self.transport.subscribe(
            self.queue, consumer_group(self.queue), self.container.id
        )
        puller = Puller(subscription, f"proxy {self.container.id}")
        try:
            async with anyio.create_task_group() as runs:
                while not self._stopping.is_set() and self.container.alive:
                    free = concurrency - self.busy
                    if free <= 0:
                        self._run_finished = anyio.Event()
                        await self._run_finished.wait()
                        continue
                    deliveries = await puller.fetch(free, self.settings.fetch_timeout_s)
                    if not deliveries:
                        if await self._idle():
                            self.leave_reason = self.leave_reason or "keep-alive expired"
                            break
                        continue
                    fetched_s = time.monotonic()
                    for delivery in deliveries:
                        self.busy += 1
                        if concurrency == 1:
                            await self._handle(delivery, fetched_s)
                        else:
                            runs.start_soon(self._handle, delivery, fetched_s)
        finally:
            with anyio.move_on_after(CLEANUP_TIMEOUT_S, shield=True):
                await subscription.close()
            with (
                anyio.move_on_after(CLEANUP_TIMEOUT_S, shield=True),
                contextlib.suppress(Exception),
            ):
                await self.container.remove()
            self.on_exit(self)
            self.exited.set()

    async def _idle(self) -> bool:
        """Pause or retire an idle container; True when the proxy should leave."""
        if self.busy:
            return False
        idle_s = time.monotonic() - self.last_used_s
        if self._may_retire is None:
            retire = idle_s >= self.settings.keep_alive_s
        else:
            retire = self._may_retire(self)
        if retire:
            return True
        if idle_s >= self.settings.pause_grace_s and not self.container.paused:
            pause_ms = await self.container.pause()
            self._record("container_paused", pause_ms=pause_ms)
        return False

    async def _handle(self, delivery: Delivery, fetched_s: float) -> None:
        """Run one delivery to its ack or nack; never raises into the proxy's task group,
        where one activation's failure would end the others."""
        try:
            try:
                with self.leases.held(delivery):
                    await self._process(delivery, fetched_s)
            except ContainerCrashed as exc:
                log.warning("container %s crashed: %s", self.container.id, exc)
                self.stop()
                await give_back(
                    self.transport,
                    delivery,
                    str(exc),
                    invoker_id=self.invoker_id,
                    record_ttl_s=self.settings.record_ttl_s,
                    container_id=self.container.id,
                )
            except Exception:
                log.exception(
                    "proxy %s failed on %s; giving it back", self.container.id, delivery.id
                )
                await delivery.nack(1.0)
        except TransportError as exc:
            log.warning(
                "proxy %s: could not give %s back (%s); the broker redelivers it",
                self.container.id,
                delivery.id,
                exc,
            )
        finally:
            self.busy -= 1
            self.last_used_s = time.monotonic()
            self._run_finished.set()

    async def _process(self, delivery: Delivery, fetched_s: float) -> None:
        accepted = await accept(
            self.transport,
            self.queue,
            delivery,
            invoker_id=self.invoker_id,
            record_ttl_s=self.settings.record_ttl_s,
        )
        if accepted is None:
            return
        activation, received_ms = accepted
        start = self._start_kind(activation.published_ms)
        init_ms = 0.0
        if start is Start.RESUMED:
            init_ms = await self.container.resume()
            self._record("container_resumed", resume_ms=init_ms)
        elif start is self._first_start:
            waited_ms = max(0.0, self._ready_ms - activation.published_ms)
            init_ms = min(self._cold_init_ms or 0.0, waited_ms)
        self._cold_init_ms = None
        self._last_answer_ms = await run_activation(
            self.transport,
            delivery,
            activation,
            self.container,
            received_ms=received_ms,
            start=start,
            init_ms=init_ms,
            invoker_id=self.invoker_id,
            record_ttl_s=self.settings.record_ttl_s,
            service_since_s=fetched_s,
            previous_answer_ms=self._last_answer_ms,
        )
        self.runs += 1
        if not self.container.alive:
            self.stop()

    def _record(self, kind: str, **detail: float) -> None:
        self.timeline.record(
            kind, self.action, invoker=self.invoker_id, container=self.container.id, **detail
        )

    def _start_kind(self, published_ms: int) -> Start:
        """Cold (or prewarm) only for a first activation that was waiting when the
        container became ready: one published later, as for a container warmed ahead of
        its work, found the container up, which is a warm start."""
        if self.container.paused:
            return Start.RESUMED
        if self._cold_init_ms is not None and published_ms < self._ready_ms:
            return self._first_start
        return Start.WARM
