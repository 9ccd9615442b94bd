"""What the simulator simulates: actions, activations, containers and invokers as plain data.

Every policy moves the same objects through the same lifecycle (create → ready → busy
⇄ idle → paused → removed), so their reports differ only by what each policy decided.
A :class:`Scenario` is the whole input of one run: the actions, the cluster and the
load, already turned into plain numbers by an input adapter (a workload file or a trace).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from broker_sched.scheduler.rates import ArrivalRate, MovingAverage


class RunTimeDistribution(Protocol):
    """Draws one run's time in milliseconds (the workload's ``RunTime`` is one)."""

    def draw(self, rng: random.Random) -> float: ...


@dataclass(frozen=True, slots=True)
class SimAction:
    name: str
    """``namespace/name``, as the scheduler names actions."""
    run_ms: RunTimeDistribution
    memory_mb: int = 256
    concurrency: int = 1
    limit: int = 50
    """Most containers the action may have (``max_containers``)."""


class Arrivals(Protocol):
    """An open-loop load: when each invocation arrives, and of which action.

    Handed out window by window, so hours of traffic never sit in memory at once. Each
    run asks for a fresh iterator with its own ``rng``, seeded alike for every policy,
    so all policies see the same arrivals.
    """

    @property
    def duration_s(self) -> float: ...

    @property
    def window_s(self) -> float: ...

    def windows(self, rng: random.Random) -> Iterator[list[tuple[float, int]]]:
        """Sorted ``(time_s, action index)`` pairs, one list per ``window_s`` from 0."""
        ...


@dataclass(frozen=True, slots=True)
class ClosedLoop:
    """``users`` callers, each invoking the next action as soon as its last call ended."""

    users: int
    duration_s: float
    weights: tuple[float, ...]
    """Relative chance of each action (by index) on every call."""
    pinned: bool = False
    """User ``i`` always calls action ``i % len(weights)`` (a workload's ``pick = "pinned"``)."""


@dataclass(frozen=True, slots=True)
class Cluster:
    invokers: int
    slots: int
    """Containers per invoker."""
    memory_mb: int
    """Memory per invoker."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    actions: tuple[SimAction, ...]
    cluster: Cluster
    load: Arrivals | ClosedLoop
    timeout_s: float
    """An activation not started this long after it arrived has timed out (its caller left)."""
    seed: int


@dataclass(slots=True, eq=False)
class Activation:
    action: ActionRuntime
    arrival_s: float
    user: int | None = None
    """The closed-loop user that sent it, None for open-loop arrivals."""
    done: bool = False
    """The caller has its answer (result, rejection or timeout): a late timer ignores it."""
    late: bool = False
    """Its run started after the timeout (``sharding`` runs what it was pushed anyway)."""


@dataclass(slots=True, eq=False)
class Invoker:
    id: str
    slots: int
    memory_mb: int
    used_slots: int = 0
    """Containers on it, being created ones included."""
    used_memory_mb: int = 0
    containers: list[Container] = field(default_factory=list)
    waiting: deque[Activation] = field(default_factory=deque)
    """``sharding`` only: activations pushed here that wait for a container."""
    held: int = 0
    """``sharding`` only: activations the controller pushed here and has no result for."""

    @property
    def free_slots(self) -> int:
        return self.slots - self.used_slots

    @property
    def free_memory_mb(self) -> int:
        return self.memory_mb - self.used_memory_mb


@dataclass(slots=True, eq=False)
class Container:
    id: int
    action: ActionRuntime
    invoker: Invoker
    ready: bool = False
    busy: int = 0
    """Runs in progress (up to the action's concurrency)."""
    paused: bool = False
    leaving: bool = False
    """Takes no more work and leaves after its current runs (scale-in, eviction, or
    its keep-alive ran out)."""
    fresh: bool = True
    """Its first run is still to come: that run is a cold start."""
    prewarmed: bool = False
    """Made ahead of a predicted call (learned windows): its cold start was paid idle."""
    idle_since_s: float = 0.0
    last_used_s: float = 0.0
    timer_due_s: float = float("inf")
    """Its idle timer (next pause or keep-alive expiry) is on the clock."""
    on_gone: Callable[[Container], None] | None = None
    """Called once the container is gone (the policy counts slots being freed)."""


@dataclass(slots=True, eq=False)
class ActionRuntime:
    """One action's live state in a run: its queue, containers and measurements."""

    index: int
    action: SimAction
    arrivals: ArrivalRate
    run_s: MovingAverage
    """Service time per activation as its container sees it: resume (if any) + run."""
    cold_start_s: MovingAverage
    queue: deque[Activation] = field(default_factory=deque)
    containers: list[Container] = field(default_factory=list)
    """Containers being created or ready; removed ones leave the list."""
    creating: int = 0
    staying: int = 0
    """Containers of :attr:`containers` not leaving: R + K as the scheduler counts them."""
    in_flight: int = 0
    throttled: bool = False
    last_active_s: float = float("-inf")
    last_arrival_s: float = float("-inf")
    last_scale_in_s: float | None = None
    idle_from_s: float | None = None
    """When its last run ended with nothing else in flight; None while it has work."""
    vacated_s: list[float | None] = field(default_factory=list)
    """Per concurrency level ``k`` (``k + 1`` runs in flight), when the runs in flight
    last fell below it; None once a call took the level again (learned windows)."""
    backlog_since_s: float | None = None
    """Since when the queue has been non-empty at every tick, as the monitor tracks it."""

    @property
    def name(self) -> str:
        return self.action.name
