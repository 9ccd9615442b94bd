"""Run controllers and invokers, all in one process or one role per process.

Components only ever talk through the transport, so the embedded stack (memory
transport, everything in one process) and a distributed deployment (one role per
process, sharing a network broker) are the same code wired differently.
"""

from __future__ import annotations

import itertools
import logging
from types import TracebackType
from typing import Literal, Self

import anyio
import anyio.abc

from broker_sched.action_store import ActionStore
from broker_sched.config import Settings
from broker_sched.errors import BrokerSchedError
from broker_sched.events import Timeline
from broker_sched.invoker.invoker import Invoker
from broker_sched.model import Action
from broker_sched.runtime import runtime_from_settings
from broker_sched.runtime.base import Runtime
from broker_sched.scheduler.controller import Controller
from transports.base import CLOSE_TIMEOUT_S, Transport
from transports.registry import transport_from_settings

log = logging.getLogger(__name__)

Role = Literal["all", "controller", "invoker"]


def actions_of(settings: Settings, extra: list[Action] | None = None) -> dict[str, Action]:
    return {action.fqn: action for action in [*settings.actions, *(extra or [])]}


class Stack:
    """Controllers and/or invokers on one transport; an async context manager.

    Entering returns once every component listens and, when this stack has both
    roles, once the controller has heard from every invoker — so the first
    invocation can be placed at once.

    The components run in a task group entered and left with the stack, so the stack
    must be left by the task that entered it. A component that fails cancels the body
    of the ``async with`` and its exception is raised on leaving (as itself when it is
    the only one). Leaving cancels every component and returns once each has ended.
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
        self.fixed_actions = dict(self.actions)
        """The actions this stack was given (the settings'): the store cannot change them."""
        self.transport = transport or transport_from_settings(settings)
        self._owns_transport = transport is None
        self.runtime = runtime or runtime_from_settings(settings)
        self.store = ActionStore(self.transport, settings.invoker.record_ttl_s)
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
        self._group: anyio.abc.TaskGroup | None = None

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
        group = self._group = anyio.create_task_group()
        await group.__aenter__()
        try:
            if self.controller is not None:
                await self.store.seed(self.fixed_actions)
            self.apply_stored(await self.store.load())
        except BrokerSchedError as exc:  # the settings' actions still run
            log.warning("the action store could not be read at start: %s", exc)
        group.start_soon(self._refresh_actions)
        if self.controller is not None:
            group.start_soon(self.controller.serve)
            await self.controller.ready()
        for invoker in self.invokers:
            group.start_soon(invoker.serve)
        if self.controller is not None and self.invokers:
            await self._wait_for_invokers(timeout_s=10 * self.settings.invoker.heartbeat_interval_s)

    def apply_stored(self, stored: dict[str, Action]) -> None:
        """Make the shared actions map the settings' actions plus the stored ones.

        The map is the one the controller and invokers hold, changed in place. This
        stack's containers of an action's older revision (updated here, or through
        this controller's API since the last call) are retired: each leaves after its
        current runs, which finish on the old code, and new activations get
        containers of the new one.
        """
        wanted = {**stored, **self.fixed_actions}
        for name in [name for name in self.actions if name not in wanted]:
            del self.actions[name]
        self.actions.update(wanted)
        for invoker in self.invokers:
            for proxy in invoker.proxies:
                current = self.actions.get(proxy.action)
                if current is None or proxy.leaving:
                    continue  # a deleted action's containers drain its queue, then leave
                if proxy.container.action.revision != current.revision:
                    proxy.stop("the action was updated")

    async def _refresh_actions(self) -> None:
        """Every heartbeat interval, the store's actions; a controller also keeps the
        records of the API's actions from expiring."""
        interval_s = self.settings.invoker.heartbeat_interval_s
        keep_every = max(1, int(self.store.ttl_s / 4 / interval_s))
        for tick in itertools.count(1):
            await anyio.sleep(interval_s)
            try:
                stored = await self.store.load()
                self.apply_stored(stored)
                if self.controller is not None and tick % keep_every == 0:
                    await self.store.keep_alive(
                        {k: a for k, a in stored.items() if k not in self.fixed_actions}
                    )
            except BrokerSchedError as exc:
                log.warning("the action store could not be read: %s", exc)

    async def _wait_for_invokers(self, timeout_s: float) -> None:
        assert self.controller is not None
        expected = {invoker.id for invoker in self.invokers}
        try:
            with anyio.fail_after(timeout_s):
                await self.controller.cluster.wait_for_invokers(expected)
        except TimeoutError:
            raise TimeoutError(
                f"invokers {sorted(expected)} sent no heartbeat in {timeout_s} s"
            ) from None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._stop_components(exc)
        finally:
            with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                await self.runtime.close()
                if self._owns_transport:
                    await self.transport.close()

    async def _stop_components(self, exc: BaseException | None) -> None:
        """Cancel the components and wait for them to end.

        Only a cancellation is handed to the task group, which then absorbs its own;
        any other exception of the body stays the body's, not wrapped in a group.
        """
        group, self._group = self._group, None
        if group is None:
            return
        group.cancel_scope.cancel()
        cancelled = exc if isinstance(exc, anyio.get_cancelled_exc_class()) else None
        try:
            await group.__aexit__(type(cancelled) if cancelled else None, cancelled, None)
        except BaseExceptionGroup as failed:
            if len(failed.exceptions) == 1:
                raise failed.exceptions[0] from failed
            raise

    async def serve_forever(self) -> None:
        """Block until a component fails (which cancels this wait) or the task is
        cancelled."""
        await anyio.sleep_forever()


def _invoker_id(base_id: str, index: int, count: int) -> str | None:
    """The configured id as is for one invoker, suffixed for several; None: generate one."""
    if not base_id:
        return None
    return base_id if count == 1 else f"{base_id}-{index}"
