"""The ``simulated`` runtime: containers that cost time but run no code.

Each operation sleeps for a cost drawn uniformly from its range in
:class:`~broker_sched.config.SimulatedRuntimeSettings` (defaults: Docker-like figures),
so experiments with hundreds of containers fit on one small machine: a container is a
few attributes and a timer, no thread or process.

Runs echo the payload: a dict payload comes back merged into ``{"ok": true}`` (so a
payload carrying ``"error"`` yields an application error, as a real handler's would),
any other payload as ``{"ok": true, "payload": ...}``. A dict payload with
``"sleep_ms"`` sets that run's time instead of the ``run_ms`` range, so tests and
workloads can choose run times per call; a run longer than its time limit reports
``TIMEOUT`` and the container dies, as in the process runtime.

Determinism: the runtime's ``random.Random(seed)`` draws every create/init cost, and
seeds each new container's own generator, which draws its run, pause, resume and
remove costs. Same seed and same order of creates → the same costs per container,
however the containers' runs interleave. The reported times are the drawn costs, not
measured wall time, so they do not depend on event-loop jitter. ``sleep`` can be
replaced by a fake clock in tests. Container ids are random all the same: they name
consumer-group members, which must stay unique across invokers sharing a seed.

Stem cells (prewarmed containers) cost a drawn ``create_ms`` when started and a drawn
``init_ms`` when given an action: the two halves of a cold start, apart.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Awaitable, Callable

from pydantic import JsonValue

from broker_sched.config import SimulatedRuntimeSettings
from broker_sched.model import Action, Start, Status
from broker_sched.runtime.base import (
    Container,
    ContainerCrashed,
    ContainerTimings,
    RunOutcome,
    Runtime,
    StemCell,
    completed,
)

Sleep = Callable[[float], Awaitable[None]]
"""Waits the given number of seconds; ``asyncio.sleep`` unless a test passes a fake clock."""


class SimulatedRuntime(Runtime):
    name = "simulated"
    makes_stem_cells = True

    def __init__(self, settings: SimulatedRuntimeSettings, *, sleep: Sleep = asyncio.sleep) -> None:
        self.settings = settings
        self._sleep = sleep
        self._rng = random.Random(settings.seed)
        self._containers: set[SimulatedContainer] = set()
        self._cells: set[SimulatedStemCell] = set()
        self._closed = False

    async def create(self, action: Action) -> tuple[Container, ContainerTimings]:
        if self._closed:
            raise ContainerCrashed("the simulated runtime is closed")
        create_ms = self._rng.uniform(*self.settings.create_ms)
        init_ms = self._rng.uniform(*self.settings.init_ms)
        container = self._container(action)
        await self._sleep((create_ms + init_ms) / 1000)
        if not container.alive:
            raise ContainerCrashed("the runtime closed while the container was starting")
        return container, ContainerTimings(create_ms=create_ms, init_ms=init_ms)

    async def start_stem_cell(self, kind: str, memory_mb: int) -> StemCell:
        if self._closed:
            raise ContainerCrashed("the simulated runtime is closed")
        create_ms = self._rng.uniform(*self.settings.create_ms)
        cell = SimulatedStemCell(kind, memory_mb, create_ms, on_removed=self._cells.discard)
        self._cells.add(cell)
        await self._sleep(cell.create_ms / 1000)
        if not cell.alive:
            raise ContainerCrashed("the runtime closed while the stem cell was starting")
        return cell

    async def initialise(
        self, cell: StemCell, action: Action
    ) -> tuple[Container, ContainerTimings]:
        if not isinstance(cell, SimulatedStemCell) or cell not in self._cells or not cell.alive:
            raise ContainerCrashed(f"stem cell {cell.id} is not a live one of this runtime's")
        await cell.remove()
        init_ms = self._rng.uniform(*self.settings.init_ms)
        container = self._container(action)
        await self._sleep(init_ms / 1000)
        if not container.alive:
            raise ContainerCrashed("the runtime closed while the container was initialising")
        return container, ContainerTimings(create_ms=0.0, init_ms=init_ms, start=Start.PREWARM)

    def _container(self, action: Action) -> SimulatedContainer:
        container = SimulatedContainer(
            f"{action.name}-sim-{secrets.token_hex(6)}",
            action,
            self.settings,
            random.Random(self._rng.getrandbits(64)),
            self._sleep,
            on_removed=self._containers.discard,
        )
        self._containers.add(container)
        return container

    async def close(self) -> None:
        self._closed = True
        for cell in list(self._cells):
            await cell.remove()
        await asyncio.gather(*(container.remove() for container in list(self._containers)))


class SimulatedStemCell(StemCell):
    """A stem cell is a flag: it costs its create when started and nothing while it waits."""

    def __init__(
        self,
        kind: str,
        memory_mb: int,
        create_ms: float,
        *,
        on_removed: Callable[[SimulatedStemCell], None],
    ) -> None:
        self.id = f"stem-sim-{secrets.token_hex(6)}"
        self._on_removed = on_removed
        self.kind = kind
        self.memory_mb = memory_mb
        self.create_ms = create_ms
        self._alive = True

    @property
    def alive(self) -> bool:
        return self._alive

    async def remove(self) -> float:
        self._alive = False
        self._on_removed(self)
        return 0.0


class SimulatedContainer(Container):
    def __init__(
        self,
        container_id: str,
        action: Action,
        settings: SimulatedRuntimeSettings,
        rng: random.Random,
        sleep: Sleep,
        *,
        on_removed: Callable[[SimulatedContainer], None],
    ) -> None:
        self.id = container_id
        self.action = action
        self.paused = False
        self._settings = settings
        self._rng = rng
        self._sleep = sleep
        self._on_removed = on_removed
        self._alive = True
        self._removed = False
        self._death = ""
        self._unpaused = asyncio.Event()
        self._unpaused.set()

    @property
    def alive(self) -> bool:
        return self._alive

    async def run(self, payload: JsonValue, timeout_s: float) -> RunOutcome:
        """Wait while paused (not counted as run time), then sleep the run's cost."""
        if not self._alive:
            raise ContainerCrashed(self._death)
        await self._unpaused.wait()
        if not self._alive:
            raise ContainerCrashed(self._death)
        run_ms = self._run_ms(payload)
        if run_ms is None:
            return RunOutcome(
                Status.ACTION_ERROR, None, "sleep_ms must be a non-negative number", 0.0
            )
        if run_ms > timeout_s * 1000:
            await self._sleep(timeout_s)
            self._die(f"killed: a run exceeded its time limit of {timeout_s:g} s")
            return RunOutcome(
                Status.TIMEOUT,
                None,
                f"the action exceeded its time limit of {timeout_s:g} s",
                timeout_s * 1000,
            )
        await self._sleep(run_ms / 1000)
        if not self._alive:
            raise ContainerCrashed(self._death)
        if isinstance(payload, dict):
            return completed({"ok": True, **payload}, run_ms)
        return completed({"ok": True, "payload": payload}, run_ms)

    def _run_ms(self, payload: JsonValue) -> float | None:
        if not isinstance(payload, dict) or "sleep_ms" not in payload:
            return self._rng.uniform(*self._settings.run_ms)
        asked = payload["sleep_ms"]
        if isinstance(asked, bool) or not isinstance(asked, int | float) or asked < 0:
            return None
        return float(asked)

    async def pause(self) -> float:
        if self.paused or not self._alive:
            return 0.0
        self.paused = True
        self._unpaused.clear()
        return await self._cost(self._settings.pause_ms)

    async def resume(self) -> float:
        if not self.paused:
            return 0.0
        took_ms = await self._cost(self._settings.resume_ms)
        self.paused = False
        self._unpaused.set()
        return took_ms

    async def remove(self) -> float:
        if self._removed:
            return 0.0
        self._removed = True
        self._die("the container was removed")
        self.paused = False
        self._unpaused.set()
        self._on_removed(self)
        return await self._cost(self._settings.remove_ms)

    def _die(self, reason: str) -> None:
        if self._alive:
            self._death = reason
        self._alive = False

    async def _cost(self, range_ms: tuple[float, float]) -> float:
        took_ms = self._rng.uniform(*range_ms)
        await self._sleep(took_ms / 1000)
        return took_ms
