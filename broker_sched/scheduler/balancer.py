"""Controller side of the `sharding` baseline: which invoker's queue gets an activation.

Like the original load balancer, each controller counts the activations it has in
flight on each invoker against that invoker's slots, and releases a slot when the
result arrives (or the invocation times out). The probing itself is the pure
:func:`~broker_sched.scheduler.sharding.choose_invoker`.
"""

from __future__ import annotations

import random
from collections import Counter

from broker_sched.scheduler.cluster import ClusterView
from broker_sched.scheduler.sharding import choose_invoker


class ShardingBalancer:
    def __init__(self, cluster: ClusterView, slots_per_invoker: int, rng: random.Random) -> None:
        self.cluster = cluster
        self.slots_per_invoker = slots_per_invoker
        self.rng = rng
        self.held: Counter[str] = Counter()
        self.overloads = 0

    def acquire(self, action: str) -> str | None:
        """The invoker to push ``action``'s next activation to, its slot now held."""
        invokers = sorted(beat.invoker_id for beat in self.cluster.live())
        free = [self.slots_per_invoker - self.held[invoker] for invoker in invokers]
        choice = choose_invoker(action, free, [True] * len(invokers), self.rng)
        if choice is None:
            return None
        invoker = invokers[choice.index]
        self.held[invoker] += 1
        self.overloads += choice.overloaded
        return invoker

    def release(self, invoker: str) -> None:
        if self.held[invoker] > 0:
            self.held[invoker] -= 1
