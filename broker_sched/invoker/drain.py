"""Drain mode: invokers on the new transport finish the work still queued on the old one.

With ``migration.drain_from`` set, each invoker runs a :class:`Drainer` beside its normal
work. Every ``drain_check_interval_s`` it reads the old queues' backlogs in one batched
call; while an action's old queue has work, the drainer keeps ``drain_containers``
containers of that action consuming it, through ordinary container proxies on the old
transport. A proxy replies over the transport its activation came from, so results reach
the old controller that is waiting for them on that transport.

A queue counts as drained once its backlog has read zero for ``drain_quiet_s`` — not at
the first zero, because old controllers may still be publishing during a rolling switch.
Its containers are then removed and the queue is no longer read; when every queue is
drained the old connection is closed and ``drain_complete`` recorded.

Drain containers hold invoker capacity through :meth:`DrainHost.reserve`, so heartbeats
report the room they take, but they are not counted as the action's containers: they do
not serve the new queue, and the controllers' scaling decisions must not think they do.

What can go wrong: the old broker unreachable or failing (retried with capped backoff;
the invoker keeps serving the new transport meanwhile, a bad setting still stops it); no
capacity (retried on the next check, with a ``drain_no_capacity`` event); a drain
container that fails to start (same). Progress is visible as ``drain_progress`` events
(remaining = pending + in flight, per action), ``drain_finished`` per action, and
:attr:`Drainer.remaining`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.abc

from broker_sched.config import Settings
from broker_sched.errors import TransportError
from broker_sched.events import Timeline
from broker_sched.invoker.leases import Leases
from broker_sched.invoker.proxy import ContainerProxy
from broker_sched.migration import QueuePair, check_distinct, source_queue
from broker_sched.model import Action
from broker_sched.runtime.base import Runtime
from transports.base import CLOSE_TIMEOUT_S, Backlog, Transport
from transports.registry import transport_from_settings

log = logging.getLogger(__name__)

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0


@dataclass(slots=True)
class DrainWatch:
    """Decides when one old queue is drained: empty on every check for ``quiet_s``."""

    quiet_s: float
    empty_since_s: float | None = None

    def observe(self, remaining: int, now_s: float) -> bool:
        """Record one backlog reading; True once the queue counts as drained."""
        if remaining > 0:
            self.empty_since_s = None
            return False
        if self.empty_since_s is None:
            self.empty_since_s = now_s
        return now_s - self.empty_since_s >= self.quiet_s


class DrainHost(Protocol):
    """What a drainer needs of the invoker it runs beside, and nothing more: who it is,
    the actions and runtime its containers come from, the timeline it reports to, and
    its capacity, which drain containers take their share of, and the leases its runs are
    renewed by."""

    @property
    def id(self) -> str: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def actions(self) -> Mapping[str, Action]: ...

    @property
    def runtime(self) -> Runtime: ...

    @property
    def timeline(self) -> Timeline: ...

    @property
    def leases(self) -> Leases:
        """What keeps the deliveries its containers run from redelivery."""
        ...

    def reserve(self, action: Action) -> bool:
        """Hold a slot and the action's memory; False when there is no room."""
        ...

    def release(self, action: Action) -> None: ...


class Drainer:
    def __init__(self, invoker: DrainHost, *, transport: Transport | None = None) -> None:
        """``transport``: the old transport, connected by the caller; by default one is
        built from the settings for ``migration.drain_from`` and owned by the drainer."""
        settings = invoker.settings
        source = settings.migration.drain_from
        if source is None:
            raise ValueError("a Drainer needs migration.drain_from")
        check_distinct(settings, source, settings.transport)
        self.invoker = invoker
        self.source = source
        self.transport = transport or transport_from_settings(settings, name=source)
        self._owns_transport = transport is None
        self.pairs = {
            action.fqn: QueuePair(
                action.fqn,
                source_queue(settings, action.namespace, action.name),
                settings.queue_name(action.namespace, action.name),
            )
            for action in invoker.actions.values()
        }
        self.remaining: dict[str, int] = {}
        self.proxies: dict[str, set[ContainerProxy]] = {name: set() for name in self.pairs}
        self.finished = anyio.Event()
        self._last: dict[str, Backlog] = {}
        self._short_of_room: set[str] = set()

    async def run(self) -> None:
        """Drain until every old queue is drained, then return; cancel to stop early.

        :attr:`finished` is set only once the drain containers are gone and the old
        connection is closed, so whoever waits for it may shut down at once.
        """
        try:
            async with anyio.create_task_group() as containers:
                try:
                    if self._owns_transport:
                        await self._connect()
                    await self._drain(containers)
                finally:
                    self._stop_all()
        finally:
            if self._owns_transport:
                with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                    await self.transport.close()
        self.invoker.timeline.record("drain_complete", transport=self.source)
        self.finished.set()

    async def _connect(self) -> None:
        delay_s = RETRY_FIRST_S
        while True:
            try:
                await self.transport.connect()
            except TransportError as exc:
                log.warning(
                    "drain: %s unreachable (%s); retrying in %.1f s", self.source, exc, delay_s
                )
                await anyio.sleep(delay_s)
                delay_s = min(delay_s * 2, RETRY_MAX_S)
            else:
                return

    async def _drain(self, containers: anyio.abc.TaskGroup) -> None:
        """Check the old queues until each is drained; drain containers run in
        ``containers``, which outlives this loop until they have left."""
        migration = self.invoker.settings.migration
        watches = {name: DrainWatch(migration.drain_quiet_s) for name in self.pairs}
        delay_s = RETRY_FIRST_S
        while watches:
            names = list(watches)
            try:
                backlogs = await self.transport.backlogs(
                    [(self.pairs[n].source, self.pairs[n].group) for n in names]
                )
            except TransportError as exc:
                log.warning("drain: reading %s backlogs failed (%s)", self.source, exc)
                await anyio.sleep(delay_s)
                delay_s = min(delay_s * 2, RETRY_MAX_S)
                continue
            delay_s = RETRY_FIRST_S
            now_s = time.monotonic()
            short: list[str] = []
            for name, backlog in zip(names, backlogs, strict=True):
                self._progress(name, backlog)
                if watches[name].observe(backlog.total, now_s):
                    del watches[name]
                    self._finish(name)
                elif backlog.total > 0:
                    short += [name] * (migration.drain_containers - len(self.proxies[name]))
            async with anyio.create_task_group() as launching:
                for name in short:
                    launching.start_soon(self._launch, name, containers)
            if watches:
                await anyio.sleep(migration.drain_check_interval_s)

    def _progress(self, name: str, backlog: Backlog) -> None:
        self.remaining[name] = backlog.total
        previous = self._last.get(name)
        if previous is None or (previous.pending, previous.in_flight) != (
            backlog.pending,
            backlog.in_flight,
        ):
            self._last[name] = backlog
            self.invoker.timeline.record(
                "drain_progress",
                name,
                transport=self.source,
                remaining=backlog.total,
                pending=backlog.pending,
                in_flight=backlog.in_flight,
                invoker=self.invoker.id,
            )

    def _finish(self, name: str) -> None:
        for proxy in self.proxies[name]:
            proxy.stop()
        self.invoker.timeline.record(
            "drain_finished", name, transport=self.source, invoker=self.invoker.id
        )

    async def _launch(self, name: str, containers: anyio.abc.TaskGroup) -> None:
        """Start one drain container for ``name``, if the invoker has room for it."""
        action = self.invoker.actions[name]
        if not self.invoker.reserve(action):
            if name not in self._short_of_room:
                self._short_of_room.add(name)
                self.invoker.timeline.record("drain_no_capacity", name, invoker=self.invoker.id)
            return
        self._short_of_room.discard(name)
        try:
            container, timings = await self.invoker.runtime.create(action)
        except Exception as exc:
            self.invoker.release(action)
            log.warning("drain: creating a container for %s failed: %s", name, exc)
            return
        proxy = ContainerProxy(
            transport=self.transport,
            container=container,
            timings=timings,
            queue=self.pairs[name].source,
            invoker_id=self.invoker.id,
            settings=self.invoker.settings.invoker,
            timeline=self.invoker.timeline,
            on_exit=self._exited,
            leases=self.invoker.leases,
        )
        self.proxies[name].add(proxy)
        containers.start_soon(self._run_proxy, proxy, name=f"drain-{container.id}")
        self.invoker.timeline.record(
            "drain_container_created",
            name,
            transport=self.source,
            invoker=self.invoker.id,
            container=container.id,
        )

    async def _run_proxy(self, proxy: ContainerProxy) -> None:
        """Run ``proxy``; if it fails before its own clean-up runs, clean up here."""
        try:
            await proxy.run()
        except Exception:
            log.exception("drain: proxy %s failed", proxy.container.id)
        finally:
            if proxy in self.proxies[proxy.action]:
                with (
                    anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True),
                    contextlib.suppress(Exception),
                ):
                    await proxy.container.remove()
                self._exited(proxy)

    def _exited(self, proxy: ContainerProxy) -> None:
        active = self.proxies[proxy.action]
        if proxy not in active:
            return
        active.discard(proxy)
        self.invoker.release(proxy.container.action)
        self.invoker.timeline.record(
            "drain_container_removed",
            proxy.action,
            transport=self.source,
            invoker=self.invoker.id,
            container=proxy.container.id,
            runs=proxy.runs,
        )

    def _stop_all(self) -> None:
        """Ask every drain container to leave after its runs; the task group they run
        in waits for them (or, when the drain is cancelled, cancels them)."""
        for active in self.proxies.values():
            for proxy in active:
                proxy.stop()
