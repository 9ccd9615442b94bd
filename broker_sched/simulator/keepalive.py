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

from broker_sched.scheduler.placement import InvokerView, place
from broker_sched.simulator.engine import BoundPolicy
from broker_sched.simulator.model import ActionRuntime, Activation, Container

DEFAULT_KEEP_ALIVE_S = 600.0
"""Ten minutes, the keep-alive commonly cited for public FaaS platforms."""


class KeepAlivePolicy(BoundPolicy):
    name = "keepalive"
    pauses = False
    frees_at_once = False

    def __init__(self, keep_alive_s: float = DEFAULT_KEEP_ALIVE_S) -> None:
        self.keep_alive_s = keep_alive_s
        self._starved: deque[ActionRuntime] = deque()
        """Actions whose queued work found no room for a container, first come first."""

    def arrive(self, activation: Activation) -> None:
        runtime = activation.action
        self.engine.accept(activation)
        self.engine.offer(runtime)
        if not self._grow(runtime) and runtime not in self._starved:
            self._starved.append(runtime)

    def ready(self, container: Container) -> None:
        self.engine.pull(container)

    def freed(self, container: Container) -> None:
        self.engine.pull(container)

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
