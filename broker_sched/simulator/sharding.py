"""The ``sharding`` baseline in virtual time: home invoker by hash, a push pool on each.

The controller side is the real choice (:func:`~broker_sched.scheduler.sharding.
probe_sequence`, then overload a random invoker) over the activations it holds per
invoker (a slot is held from the push until the result); the probe order of each
action is computed once, which is what ``choose_invoker`` spends most of its time on.
The invoker side models ``PushPool``: a free warm container of the action
(most recently used first), else a cold start if a slot is free, else evict the least
recently used idle container and cold-start in its place, else wait — in arrival order
— for a container to free up. The pool counts slots only (not memory), runs one
activation per container, and runs what it was pushed even after its caller gave up.
"""

from __future__ import annotations

from broker_sched.scheduler.sharding import Choice, probe_sequence
from broker_sched.simulator.engine import BoundPolicy, Engine
from broker_sched.simulator.model import Activation, Container, Invoker


class ShardingPolicy(BoundPolicy):
    name = "sharding"
    pauses = True
    frees_at_once = True

    def __init__(self, keep_alive_s: float) -> None:
        self.keep_alive_s = keep_alive_s
        self._evicting = False
        """An eviction in progress: its removal must not let waiters jump in."""

    def start(self, engine: Engine) -> None:
        super().start(engine)
        self._probes: dict[str, list[int]] = {}

    def arrive(self, activation: Activation) -> None:
        engine = self.engine
        invokers = engine.invokers
        invoker = invokers[self.choose(activation.action.name).index]
        invoker.held += 1
        engine.outstanding += 1
        if invoker.waiting or not self._acquire(invoker, activation):
            invoker.waiting.append(activation)

    def choose(self, action: str) -> Choice:
        """``choose_invoker`` over the held slots, with the probe order cached."""
        invokers = self.engine.invokers
        probes = self._probes.get(action)
        if probes is None:
            probes = self._probes[action] = probe_sequence(action, len(invokers))
        for index in probes:
            if invokers[index].held < invokers[index].slots:
                return Choice(index, overloaded=False)
        return Choice(self.rng.choice(range(len(invokers))), overloaded=True)

    def ready(self, container: Container) -> None:
        """Never called: every push-pool container is created for an activation."""

    def freed(self, container: Container) -> None:
        container.invoker.held -= 1
        self._serve(container.invoker)

    def removed(self, container: Container) -> None:
        if not self._evicting:
            self._serve(container.invoker)

    def _serve(self, invoker: Invoker) -> None:
        """Waiting activations retry in order; once the first cannot go, none can."""
        waiting = invoker.waiting
        while waiting and self._acquire(invoker, waiting[0]):
            waiting.popleft()

    def _acquire(self, invoker: Invoker, activation: Activation) -> bool:
        engine = self.engine
        runtime = activation.action
        idle = [c for c in invoker.containers if c.ready and not c.busy and not c.leaving]
        warm = [c for c in idle if c.action is runtime]
        if warm:
            engine.start(max(warm, key=lambda c: c.last_used_s), activation)
            return True
        if invoker.used_slots >= invoker.slots:
            if not idle:
                return False
            engine.meter.evictions += 1
            self._evicting = True
            engine.retire(min(idle, key=lambda c: c.last_used_s))
            self._evicting = False
        engine.create(runtime, invoker, bound=activation)
        return True
