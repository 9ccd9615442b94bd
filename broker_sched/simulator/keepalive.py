"""The fixed keep-alive baseline: one container per concurrent request, kept warm.

The common provider default: an invocation that finds no free warm container of its
function gets a new one on the spot (a cold start), and every container stays, warm and
unpaused, for a fixed ``keep_alive_s`` after its last run (10 minutes by default) —
however rarely the function is called. Nothing decides ahead of demand and nothing is
evicted. It runs on the same cluster as the other policies: when no invoker has room
for a new container, the invocation waits in its function's queue for a container of
the function to free up, or for any container to leave and make room.
"""

from __future__ import annotations

from collections import deque
from functools import partial

from broker_sched.config import KeepAliveSettings
from broker_sched.scheduler.idle_windows import (
    BinShape,
    IdleHistogram,
    Windows,
    fixed_windows,
    learned_windows,
    relearn_due,
)
from broker_sched.scheduler.placement import InvokerView, place
from broker_sched.simulator.engine import BoundPolicy
from broker_sched.simulator.model import ActionRuntime, Activation, Container

DEFAULT_KEEP_ALIVE_S = 600.0
"""Ten minutes, the keep-alive commonly cited for public FaaS platforms."""


class KeepAlivePolicy(BoundPolicy):
    name = "keepalive"
    pauses = False
    frees_at_once = False

    def __init__(
        self,
        keep_alive_s: float = DEFAULT_KEEP_ALIVE_S,
        *,
        learned: KeepAliveSettings | None = None,
        name: str = "keepalive",
    ) -> None:
        self.name = name
        self.keep_alive_s = keep_alive_s
        """Fixed: every container's; learned: the fallback of a function with few idle times."""
        self.learned = learned
        self._starved: deque[ActionRuntime] = deque()
        """Actions whose queued work found no room for a container, first come first."""
        self._histograms: dict[int, IdleHistogram] = {}
        self._windows: dict[int, Windows] = {}
        self._learned_at: dict[int, int] = {}
        """Per action, its histogram's samples when its windows were last learned."""
        self._shape = BinShape.of(learned) if learned is not None else None
        self.prewarmed = 0
        """Containers made ahead of a predicted call."""

    def keep_alive_for(self, container: Container) -> float:
        if self.learned is None:
            return self.keep_alive_s
        runtime = container.action
        windows = self._windows.get(runtime.index) or fixed_windows(self.keep_alive_s)
        if windows.prewarm_s > 0 and not container.prewarmed:
            return 0.0  # scale to zero now; a container comes back as the window ends
        idle_from_s = runtime.idle_from_s
        if runtime.in_flight or idle_from_s is None:
            return windows.until_s
        return max(0.0, idle_from_s + windows.until_s - container.idle_since_s)

    def arrive(self, activation: Activation) -> None:
        runtime = activation.action
        if self._shape is not None:
            self._learn(runtime)
        self.engine.accept(activation)
        self.engine.offer(runtime)
        if not self._grow(runtime) and runtime not in self._starved:
            self._starved.append(runtime)

    def ready(self, container: Container) -> None:
        self.engine.pull(container)

    def freed(self, container: Container) -> None:
        self.engine.pull(container)
        container.prewarmed = False  # it ran: from now on it is kept like any other
        runtime = container.action
        if self.learned is not None and runtime.idle_from_s is not None:
            windows = self._windows.get(runtime.index)
            if windows is not None and windows.prewarm_s > 0:
                self.engine.events.at(
                    runtime.idle_from_s + windows.prewarm_s,
                    partial(self._prewarm, runtime, runtime.idle_from_s),
                )

    def _learn(self, runtime: ActionRuntime) -> None:
        """A call adds its idle time to its function's histogram: how long the
        concurrency level it needs (the runs in flight and queued, plus itself) was
        unused — the function's idle time for a first call, a second container's for
        an overlapping one."""
        runtime.idle_from_s = None
        level = runtime.in_flight + len(runtime.queue)
        vacated = runtime.vacated_s
        if level >= len(vacated) or (vacated_s := vacated[level]) is None:
            return
        vacated[level] = None
        assert self._shape is not None
        assert self.learned is not None
        histogram = self._histograms.get(runtime.index)
        if histogram is None:
            histogram = self._histograms[runtime.index] = IdleHistogram(self._shape)
        histogram.add(self.engine.now_s - vacated_s)
        samples = histogram.samples
        if relearn_due(samples, self._learned_at.get(runtime.index, 0)):
            self._learned_at[runtime.index] = samples
            self._windows[runtime.index] = learned_windows(
                histogram, self.learned, self.keep_alive_s
            )

    def _prewarm(self, runtime: ActionRuntime, idle_from_s: float) -> None:
        """The pre-warm window ended with the function still idle: make its container."""
        if runtime.idle_from_s != idle_from_s or runtime.staying or runtime.queue:
            return
        views = [
            InvokerView(invoker.id, invoker.free_slots, invoker.free_memory_mb)
            for invoker in self.engine.invokers
        ]
        placement = place(views, runtime.action.name, runtime.action.memory_mb, self.rng)
        if placement is None:
            return
        container = self.engine.create(runtime, self.engine.invoker_by_id[placement.invoker_id])
        container.prewarmed = True
        container.fresh = False
        self.prewarmed += 1

    def removed(self, container: Container) -> None:
        while self._starved:
            if not self._grow(self._starved[0]):
                return
            self._starved.popleft()

    def _grow(self, runtime: ActionRuntime) -> bool:
        """Create containers until the queued work has one each; False when room ran out
        first (the limit does not count: at the limit the work waits, like any burst)."""
        action = runtime.action
        engine = self.engine
        while len(runtime.queue) > runtime.creating * action.concurrency:
            if len(runtime.containers) >= action.limit:
                return True
            views = [
                InvokerView(invoker.id, invoker.free_slots, invoker.free_memory_mb)
                for invoker in engine.invokers
            ]
            placement = place(views, action.name, action.memory_mb, self.rng)
            if placement is None:
                return False
            engine.create(runtime, engine.invoker_by_id[placement.invoker_id])
        return True
