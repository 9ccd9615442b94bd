"""The container proxy: one per container, pulling its action's queue.

The proxy is what makes scheduling location-free: it joins the action's consumer group
from wherever its container runs and takes work when the container is free. Nothing
ever pushes an activation to a particular container.

Lifecycle: fetch → (resume if paused) → run → send the result → ack. The ack comes only
after the result has been sent, so a crash between the two re-runs the activation
rather than losing it (at-least-once; the controller reports one result per id).
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

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from broker_sched.config import InvokerSettings
from broker_sched.errors import MalformedMessage
from broker_sched.events import Timeline
from broker_sched.invoker.pulling import Puller, TaskSet
from broker_sched.invoker.replies import answer
from broker_sched.model import Activation, Start, Status, decode, now_ms
from broker_sched.runtime.base import Container, ContainerCrashed, ContainerTimings
from transports.base import Delivery, Transport

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
"""An activation that crashed this many containers is answered with a system error."""


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
        may_retire: Callable[[ContainerProxy], bool] | None = None,
    ) -> None:
        """``may_retire``: whether this idle container leaves now (the invoker's retention
        rules); default: once idle for ``keep_alive_s``."""
        self.transport = transport
        self.container = container
        self.queue = queue
        self.invoker_id = invoker_id
        self.settings = settings
        self.timeline = timeline
        self.on_exit = on_exit
        self._may_retire = may_retire
        self.busy = 0
        self.runs = 0
        self.last_used_s = time.monotonic()
        self._cold_init_ms: float | None = timings.create_ms + timings.init_ms
        self._first_start = timings.start
        self._ready_ms = now_ms()
        self._last_answer_ms = 0.0
        self._stopping = asyncio.Event()
        self.leave_reason = ""
        self.exited = asyncio.Event()
        """Set once the proxy has left its group and its container is removed."""
        self._tasks = TaskSet()

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
        concurrency = self.container.action.concurrency
        subscription = await self.transport.subscribe(self.queue, self.queue, self.container.id)
        puller = Puller(subscription, f"proxy {self.container.id}")
        try:
            while not self._stopping.is_set() and self.container.alive:
                free = concurrency - self.busy
                if free <= 0:
                    await self._tasks.wait_any()
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
                    self._tasks.spawn(self._handle(delivery, fetched_s))
            await self._tasks.wait_all()
        finally:
            await subscription.close()
            with contextlib.suppress(Exception):
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
        try:
            await self._process(delivery, fetched_s)
        except ContainerCrashed as exc:
            log.warning("container %s crashed: %s", self.container.id, exc)
            await self._give_back(delivery, str(exc))
        except Exception:
            log.exception("proxy %s failed on %s; giving it back", self.container.id, delivery.id)
            await delivery.nack(1.0)
        finally:
            self.busy -= 1
            self.last_used_s = time.monotonic()

    async def _process(self, delivery: Delivery, fetched_s: float) -> None:
        try:
            activation = decode(Activation, delivery.body)
        except MalformedMessage as exc:
            await self.transport.dead_letter(self.queue, delivery.body, str(exc))
            await delivery.ack()
            return
        received_ms = now_ms()
        if received_ms > activation.deadline_ms:
            await answer(
                self.transport,
                delivery,
                activation,
                Status.TIMEOUT,
                invoker_id=self.invoker_id,
                error="deadline passed while queued",
            )
            return
        start = self._start_kind(activation.published_ms)
        init_ms = 0.0
        if start is Start.RESUMED:
            init_ms = await self.container.resume()
            self._record("container_resumed", resume_ms=init_ms)
        elif start is self._first_start:
            waited_ms = max(0.0, self._ready_ms - activation.published_ms)
            init_ms = min(self._cold_init_ms or 0.0, waited_ms)
        self._cold_init_ms = None
        remaining_s = (activation.deadline_ms - received_ms) / 1000
        timeout_s = min(self.container.action.timeout_s, remaining_s)
        outcome = await self.container.run(activation.payload, timeout_s)
        self.runs += 1
        answering_s = time.monotonic()
        await answer(
            self.transport,
            delivery,
            activation,
            outcome.status,
            result=outcome.result,
            error=outcome.error,
            start=start,
            wait_ms=max(0.0, received_ms - activation.published_ms),
            init_ms=init_ms,
            run_ms=outcome.run_ms,
            service_ms=(answering_s - fetched_s) * 1000 + self._last_answer_ms,
            invoker_id=self.invoker_id,
            container_id=self.container.id,
        )
        self._last_answer_ms = (time.monotonic() - answering_s) * 1000
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

    async def _give_back(self, delivery: Delivery, reason: str) -> None:
        """Redeliver the work of a crashed container, or give up after MAX_ATTEMPTS."""
        self.stop()
        if delivery.attempt < MAX_ATTEMPTS:
            await delivery.nack()
            return
        try:
            activation = decode(Activation, delivery.body)
        except MalformedMessage:
            await delivery.ack()
            return
        await answer(
            self.transport,
            delivery,
            activation,
            Status.SYSTEM_ERROR,
            error=f"container crashed on {delivery.attempt} attempts: {reason}",
            invoker_id=self.invoker_id,
            container_id=self.container.id,
        )
