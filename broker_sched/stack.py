"""Run controllers and invokers, all in one process or one role per process.

Components only ever talk through the transport, so the embedded stack (memory
transport, everything in one process) and a distributed deployment (one role per
process, sharing a network broker) are the same code wired differently.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Literal, Self

from broker_sched.config import Settings
from broker_sched.events import Timeline
from broker_sched.invoker.invoker import Invoker
from broker_sched.model import Action
from broker_sched.runtime import runtime_from_settings
from broker_sched.runtime.base import Runtime
from broker_sched.scheduler.controller import Controller
from transports.base import Transport
from transports.registry import transport_from_settings

Role = Literal["all", "controller", "invoker"]


def actions_of(settings: Settings, extra: list[Action] | None = None) -> dict[str, Action]:
    return {action.fqn: action for action in [*settings.actions, *(extra or [])]}


class Stack:
    """Controllers and/or invokers on one transport; an async context manager.

    Entering returns once every component listens and, when this stack has both
    roles, once the controller has heard from every invoker — so the first
    invocation can be placed at once.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        role: Role = "all",
        invokers: int = 1,
        actions: dict[str, Action] | None = None,
        transport: Transport | None = None,
        runtime: Runtime | None = None,
        timeline: Timeline | None = None,
    ) -> None:
        self.settings = settings
        self.role = role
        self.actions = actions if actions is not None else actions_of(settings)
        self.transport = transport or transport_from_settings(settings)
        self._owns_transport = transport is None
        self.runtime = runtime or runtime_from_settings(settings)
        self.timeline = timeline if timeline is not None else Timeline()
        self.controller: Controller | None = None
        self.invokers: list[Invoker] = []
        if role in ("all", "controller"):
            self.controller = Controller(
                transport=self.transport,
                settings=settings,
                actions=self.actions,
                timeline=self.timeline,
            )
        if role in ("all", "invoker"):
            base_id = settings.invoker.id
            self.invokers = [
                Invoker(
                    transport=self.transport,
                    runtime=self.runtime,
                    settings=settings,
                    actions=self.actions,
                    invoker_id=_invoker_id(base_id, index, invokers),
                    timeline=self.timeline,
                )
                for index in range(invokers)
            ]
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> Self:
        if self._owns_transport:
            await self.transport.connect()
        try:
            await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _start(self) -> None:
        if self.controller is not None:
            self._tasks.append(asyncio.create_task(self.controller.serve()))
            await self.controller.ready()
        self._tasks += [asyncio.create_task(invoker.serve()) for invoker in self.invokers]
        if self.controller is not None and self.invokers:
            await self._wait_for_invokers(timeout_s=10 * self.settings.invoker.heartbeat_interval_s)

    async def _wait_for_invokers(self, timeout_s: float) -> None:
        assert self.controller is not None
        expected = {invoker.id for invoker in self.invokers}
        waiting = asyncio.create_task(self.controller.cluster.wait_for_invokers(expected))
        done, _ = await asyncio.wait(
            [waiting, *self._tasks], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
        )
        if waiting not in done:
            waiting.cancel()
            for task in done:
                task.result()
            raise TimeoutError(f"invokers {sorted(expected)} sent no heartbeat in {timeout_s} s")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self.runtime.close()
        if self._owns_transport:
            await self.transport.close()

    async def serve_forever(self) -> None:
        """Block until a component fails or the task is cancelled."""
        await asyncio.gather(*self._tasks)


def _invoker_id(base_id: str, index: int, count: int) -> str | None:
    """The configured id as is for one invoker, suffixed for several; None: generate one."""
    if not base_id:
        return None
    return base_id if count == 1 else f"{base_id}-{index}"
