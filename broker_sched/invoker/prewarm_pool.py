"""An invoker's prewarm pools: stem cells per runtime kind and memory size.

A container request for an action whose kind and memory match a pool takes a ready
stem cell and pays only the action's init (``start = prewarm``); the pool then starts
another in the background. Sizing is :mod:`broker_sched.invoker.prewarm_sizing`.

Stem cells are held on the invoker's own capacity but not reported as used in its
heartbeats: a stem cell gives way to any container that needs its room
(:meth:`PrewarmPool.give_way`), so to placement it is free room, and the pool refills
only from room no container holds. What the pool did is counted per pool for
``/metrics``: cells ready, hits (requests it served) and misses (requests of its kind
and size that found it empty, which a reactive pool grows from).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import anyio.abc

from broker_sched.config import PrewarmPoolSettings, PrewarmSettings
from broker_sched.events import Timeline
from broker_sched.invoker.prewarm_sizing import plan_pool, pool_target
from broker_sched.model import Action
from broker_sched.runtime.base import Runtime, StemCell

log = logging.getLogger(__name__)

FreeRoom = Callable[[], tuple[int, int]]
"""The invoker's free slots and memory (MB), counting containers and reservations only."""


@dataclass(slots=True, eq=False)
class _Ready:
    cell: StemCell
    since_s: float


def pool_key(action: Action) -> str:
    return f"{action.kind}:{action.memory_mb}"


class PrewarmPool:
    def __init__(
        self,
        *,
        runtime: Runtime,
        settings: PrewarmSettings,
        free_room: FreeRoom,
        timeline: Timeline,
        invoker_id: str,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.pools: dict[str, PrewarmPoolSettings] = {pool.key: pool for pool in settings.pools}
        self._free_room = free_room
        self.timeline = timeline
        self.invoker_id = invoker_id
        self._ready: dict[str, list[_Ready]] = {key: [] for key in self.pools}
        self._starting: Counter[str] = Counter()
        self.hits: Counter[str] = Counter()
        self.misses: Counter[str] = Counter()
        self._window_misses: Counter[str] = Counter()
        self._last_window: dict[str, int | None] = dict.fromkeys(self.pools)
        self._wake = anyio.Event()

    def ready(self, key: str) -> int:
        return len(self._ready.get(key, ()))

    def held(self) -> tuple[int, int]:
        """Slots and memory the stem cells hold, those still starting included."""
        slots = memory_mb = 0
        for key, pool in self.pools.items():
            count = len(self._ready[key]) + self._starting[key]
            slots += count
            memory_mb += count * pool.memory_mb
        return slots, memory_mb

    def take(self, action: Action) -> StemCell | None:
        """A ready stem cell for ``action`` (the oldest), or None: a miss when a pool of
        its kind and size exists."""
        key = pool_key(action)
        ready = self._ready.get(key)
        if ready is None:
            return None
        self._wake.set()
        while ready:
            cell = ready.pop(0).cell
            if cell.alive:
                self.hits[key] += 1
                return cell
        self.misses[key] += 1
        self._window_misses[key] += 1
        return None

    async def give_way(self) -> None:
        """Remove stem cells until they fit beside the containers and reservations:
        called when a container needs room a stem cell holds."""
        while self._overcommitted():
            victim = self._oldest()
            if victim is None:
                return
            await self._remove(victim, "gave way to a container")

    def report(self) -> dict[str, dict[str, int]]:
        """The heartbeat's pool fields."""
        return {
            "prewarm": {key: len(ready) for key, ready in self._ready.items()},
            "prewarm_hits": dict(self.hits),
            "prewarm_misses": dict(self.misses),
        }

    async def run(self) -> None:
        """Keep every pool at its target until cancelled; then remove every stem cell.

        Stem cells start in this task's own group, so a cancelled pool also cancels the
        starts still under way.
        """
        window_end_s = time.monotonic() + self.settings.window_s
        try:
            async with anyio.create_task_group() as starts:
                while True:
                    now_s = time.monotonic()
                    if now_s >= window_end_s:
                        self._end_window()
                        window_end_s = now_s + self.settings.window_s
                    await self._tend(now_s, starts)
                    with anyio.move_on_after(self.settings.check_interval_s):
                        await self._wake.wait()
                    self._wake = anyio.Event()
        finally:
            with anyio.CancelScope(shield=True):
                await self.close()

    async def close(self) -> None:
        """Remove every ready stem cell (the starts under way end with :meth:`run`)."""
        for ready in self._ready.values():
            cells, ready[:] = [item.cell for item in ready], []
            for cell in cells:
                with contextlib.suppress(Exception):
                    await cell.remove()

    def _end_window(self) -> None:
        for key in self.pools:
            self._last_window[key] = self._window_misses[key]
        self._window_misses.clear()

    async def _tend(self, now_s: float, starts: anyio.abc.TaskGroup) -> None:
        for key, pool in self.pools.items():
            ready = list(self._ready[key])  # oldest first: appended as they became ready
            plan = plan_pool(
                pool_target(pool, self._last_window[key]),
                [now_s - item.since_s for item in ready],
                self._starting[key],
                pool.ttl_s,
            )
            stale, fresh = ready[: plan.remove_stale], ready[plan.remove_stale :]
            for item in stale:
                await self._remove((key, item), "ttl expired")
            for item in fresh[: plan.remove_surplus]:
                await self._remove((key, item), "above the pool's target")
            for _ in range(plan.start):
                if not self._room_for(pool.memory_mb):
                    break
                self._starting[key] += 1
                starts.start_soon(self._start, key, pool)

    async def _start(self, key: str, pool: PrewarmPoolSettings) -> None:
        try:
            cell = await self.runtime.start_stem_cell(pool.kind, pool.memory_mb)
        except Exception as exc:
            log.warning("invoker %s: a %s stem cell failed to start: %s", self.invoker_id, key, exc)
            return
        finally:
            self._starting[key] -= 1
        self._ready[key].append(_Ready(cell, time.monotonic()))
        self.timeline.record(
            "stem_cell_started",
            key,
            invoker=self.invoker_id,
            container=cell.id,
            create_ms=cell.create_ms,
        )
        if self._overcommitted():
            await self.give_way()

    def _room_for(self, memory_mb: int) -> bool:
        free_slots, free_memory_mb = self._free_room()
        held_slots, held_memory_mb = self.held()
        return free_slots - held_slots >= 1 and free_memory_mb - held_memory_mb >= memory_mb

    def _overcommitted(self) -> bool:
        free_slots, free_memory_mb = self._free_room()
        held_slots, held_memory_mb = self.held()
        return held_slots > free_slots or held_memory_mb > free_memory_mb

    def _oldest(self) -> tuple[str, _Ready] | None:
        candidates = [(item.since_s, key, item) for key, r in self._ready.items() for item in r]
        if not candidates:
            return None
        _, key, item = min(candidates, key=lambda candidate: candidate[0])
        return key, item

    async def _remove(self, victim: tuple[str, _Ready], reason: str) -> None:
        key, item = victim
        with contextlib.suppress(ValueError):
            self._ready[key].remove(item)
        with contextlib.suppress(Exception):
            await item.cell.remove()
        self.timeline.record(
            "stem_cell_removed", key, invoker=self.invoker_id, container=item.cell.id, reason=reason
        )
