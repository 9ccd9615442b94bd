"""The simulation engine: one policy, one scenario, in virtual time.

The engine owns what every policy shares: the clock, the arrivals, the invokers and
the container lifecycle, modelled after the container proxy and the push pool:

- a new container is ready after a create + init cost drawn from
  ``settings.simulated.create_ms`` and ``init_ms`` (uniform, like the simulated
  runtime); its first run is a cold start;
- a run takes the action's run-time draw; a run on a paused container first pays a
  resume drawn from ``settings.simulated.resume_ms``; resume + run is the service
  time the action's ``d`` averages (fetch and ack are instant);
- idle for ``pause_grace_s`` → paused (when the policy pauses), idle for the policy's
  keep-alive → the container leaves;
- a container told to leave (eviction, scale-in, keep-alive) takes no more work,
  finishes its runs and frees its slot and memory after a remove drawn from
  ``settings.simulated.remove_ms`` — at once under a push pool, which drops a
  container from its slots before removing it.

A policy (:class:`Policy`) decides the rest: where an arrival goes and when containers
are made or removed. Heartbeats are instant: every policy sees the cluster as it is.
"""

from __future__ import annotations

import bisect
import itertools
import random
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Protocol

from broker_sched.config import Settings
from broker_sched.scheduler.rates import ArrivalRate, MovingAverage
from broker_sched.simulator.events import EventQueue
from broker_sched.simulator.metrics import Meter, PolicyReport
from broker_sched.simulator.model import (
    ActionRuntime,
    Activation,
    ClosedLoop,
    Container,
    Invoker,
    Scenario,
)

REJECT_BACKOFF_S = 0.05
"""A closed-loop user turned away waits this long before its next call (as the bench)."""

SAMPLES = 600
"""Points of the containers-over-time series per run."""


class Policy(Protocol):
    name: str
    pauses: bool
    """Idle containers are paused after ``pause_grace_s`` (and pay a resume to run)."""
    keep_alive_s: float
    """An idle container leaves after this long (unless :meth:`keep_alive_for` says otherwise)."""
    frees_at_once: bool
    """A removed container's slot is free at once (push pool), not after the remove cost."""

    def start(self, engine: Engine) -> None:
        """Called once before the first event."""

    def keep_alive_for(self, container: Container) -> float:
        """How long idle ``container`` stays, counted from its idle start."""

    def arrive(self, activation: Activation) -> None:
        """An invocation arrived: accept (and route) it, or reject it."""

    def ready(self, container: Container) -> None:
        """A container created with no activation of its own became ready."""

    def freed(self, container: Container) -> None:
        """A run on ``container`` ended and it stays (it may take more work now)."""

    def removed(self, container: Container) -> None:
        """``container`` is gone: its slot and memory are free."""


class BoundPolicy:
    """What every policy does alike: hold the engine it was started on, and a random
    generator seeded from the scenario and the policy's name (the same run, the same
    tie-breaks)."""

    name: str
    keep_alive_s: float
    _engine: Engine | None = None

    def keep_alive_for(self, container: Container) -> float:
        return self.keep_alive_s

    @property
    def engine(self) -> Engine:
        assert self._engine is not None, "start() first"
        return self._engine

    def start(self, engine: Engine) -> None:
        self._engine = engine
        self.rng = random.Random(f"{engine.scenario.seed}-{self.name}")


class Engine:
    def __init__(
        self,
        scenario: Scenario,
        settings: Settings,
        policy: Policy,
        *,
        record_decisions: bool = False,
    ) -> None:
        self.scenario = scenario
        self.policy = policy
        self.events = EventQueue()
        self.meter = Meter(record_decisions=record_decisions)
        seed = scenario.seed
        self.load_rng = random.Random(f"{seed}-load")
        self.run_rng = random.Random(f"{seed}-runs")
        self.cost_rng = random.Random(f"{settings.simulated.seed}-costs")
        cluster = scenario.cluster
        self.invokers = [
            Invoker(f"invoker{i:03d}", cluster.slots, cluster.memory_mb)
            for i in range(cluster.invokers)
        ]
        self.invoker_by_id = {invoker.id: invoker for invoker in self.invokers}
        scheduler = settings.scheduler
        self.actions = [
            ActionRuntime(
                index,
                action,
                ArrivalRate(scheduler.arrival_window_s),
                MovingAverage(scheduler.run_time_samples),
                MovingAverage(scheduler.run_time_samples),
            )
            for index, action in enumerate(scenario.actions)
        ]
        self.outstanding = 0
        """Accepted activations not yet answered (queued, waiting or running)."""
        self._ids = itertools.count()
        self._costs = settings.simulated
        self._pause_grace_s = settings.invoker.pause_grace_s
        self._weights: list[float] = []
        """Cumulative weights of the actions for closed-loop users' picks."""

    @property
    def now_s(self) -> float:
        return self.events.now_s

    def run(self) -> PolicyReport:
        """Simulate the whole load, then let accepted work finish (up to the timeout)."""
        started = time.perf_counter()
        load = self.scenario.load
        duration_s = load.duration_s
        self.policy.start(self)
        if isinstance(load, ClosedLoop):
            self._weights = list(itertools.accumulate(load.weights))
            for user in range(load.users):
                self.events.at(0.0, partial(self._user_calls, user))
        else:
            windows = load.windows(self.load_rng)
            self.events.at(0.0, partial(self._arrival_window, windows, 0.0))
        step_s = duration_s / SAMPLES
        for i in range(SAMPLES + 1):
            self.events.at(i * step_s, partial(self.meter.sample, i * step_s))
        self.events.run(duration_s)
        deadline_s = duration_s + self.scenario.timeout_s
        while self.outstanding and not self.events.idle() and self.now_s < deadline_s:
            self.events.run(min(deadline_s, self.now_s + 1.0))
        self._expire_leftovers()
        return self.meter.report(self.policy.name, self.now_s, time.perf_counter() - started)

    # --- the load ---------------------------------------------------------------------

    def _arrival_window(self, windows: Iterator[list[tuple[float, int]]], start_s: float) -> None:
        load = self.scenario.load
        assert not isinstance(load, ClosedLoop)
        for time_s, index in next(windows, []):
            self.events.at(time_s, partial(self._arrive, Activation(self.actions[index], time_s)))
        end_s = start_s + load.window_s
        if end_s < load.duration_s:
            self.events.at(end_s, partial(self._arrival_window, windows, end_s))

    def _user_calls(self, user: int) -> None:
        load = self.scenario.load
        assert isinstance(load, ClosedLoop)
        if self.now_s >= load.duration_s:
            return
        weights = self._weights
        if load.pinned:
            index = user % len(weights)
        else:
            pick = self.load_rng.random() * weights[-1]
            index = min(bisect.bisect_right(weights, pick), len(weights) - 1)
        activation = Activation(self.actions[index], self.now_s, user)
        self.events.at(
            self.now_s + self.scenario.timeout_s, partial(self._user_gives_up, activation)
        )
        self._arrive(activation)

    def _user_gives_up(self, activation: Activation) -> None:
        if not activation.done:
            self.answer(activation)

    def _arrive(self, activation: Activation) -> None:
        self.meter.activations += 1
        self.policy.arrive(activation)

    def answer(self, activation: Activation, *, backoff_s: float = 0.0) -> None:
        """The caller has its answer; a closed-loop user then sends its next call."""
        if activation.done:
            return
        activation.done = True
        if activation.user is not None:
            self.events.at(self.now_s + backoff_s, partial(self._user_calls, activation.user))

    def accept(self, activation: Activation) -> None:
        """Queue ``activation`` on its action's FIFO queue (pull-based policies)."""
        activation.action.queue.append(activation)
        self.outstanding += 1

    def reject(self, activation: Activation) -> None:
        self.meter.rejected += 1
        self.answer(activation, backoff_s=REJECT_BACKOFF_S)

    def expired(self, activation: Activation) -> bool:
        """True (and counted as timed out) when the caller already gave up on it."""
        if activation.done or self.now_s - activation.arrival_s >= self.scenario.timeout_s:
            self.meter.timed_out += 1
            self.outstanding -= 1
            self.answer(activation)
            return True
        return False

    def _expire_leftovers(self) -> None:
        """Work still queued when the run stops never ran in time: it timed out."""
        queues = [runtime.queue for runtime in self.actions]
        queues += [invoker.waiting for invoker in self.invokers]
        for queue in queues:
            while queue:
                self.meter.timed_out += 1
                self.outstanding -= 1
                self.answer(queue.popleft())

    # --- the container lifecycle --------------------------------------------------------

    def create(
        self, runtime: ActionRuntime, invoker: Invoker, bound: Activation | None = None
    ) -> Container:
        """Start creating a container on ``invoker``; ``bound`` is run on it first."""
        now_s = self.now_s
        container = Container(next(self._ids), runtime, invoker, last_used_s=now_s)
        invoker.used_slots += 1
        invoker.used_memory_mb += runtime.action.memory_mb
        invoker.containers.append(container)
        runtime.containers.append(container)
        runtime.creating += 1
        runtime.staying += 1
        self.meter.container_added(now_s, runtime.action.memory_mb)
        cost_ms = self.cost_rng.uniform(*self._costs.create_ms)
        cost_ms += self.cost_rng.uniform(*self._costs.init_ms)
        self.events.at(now_s + cost_ms / 1000, partial(self._ready, container, bound, cost_ms))
        return container

    def _ready(self, container: Container, bound: Activation | None, cost_ms: float) -> None:
        runtime = container.action
        runtime.creating -= 1
        runtime.cold_start_s.add(cost_ms / 1000)
        if bound is not None:
            self.start(container, bound)
            container.ready = True
            return
        container.ready = True
        self._go_idle(container)
        self.policy.ready(container)

    def start(self, container: Container, activation: Activation) -> None:
        """Run ``activation`` on ``container`` now (resuming it first if paused)."""
        now_s = self.now_s
        runtime = container.action
        if container.ready and container.busy == 0:
            self.meter.idle(now_s, runtime.action.memory_mb, starts=False)
        container.busy += 1
        runtime.in_flight += 1
        resume_s = 0.0
        resumed = container.paused
        if resumed:
            resume_s = self.cost_rng.uniform(*self._costs.resume_ms) / 1000
            container.paused = False
        cold = container.fresh
        container.fresh = False
        run_s = max(0.0, runtime.action.run_ms.draw(self.run_rng)) / 1000
        if now_s - activation.arrival_s >= self.scenario.timeout_s:
            activation.late = True
            self.meter.timed_out += 1
            self.answer(activation)
        else:
            self.meter.started(now_s + resume_s - activation.arrival_s, cold=cold, resumed=resumed)
        service_s = resume_s + run_s
        self.events.at(now_s + service_s, partial(self._done, container, activation, service_s))

    def _done(self, container: Container, activation: Activation, service_s: float) -> None:
        runtime = container.action
        container.busy -= 1
        runtime.in_flight -= 1
        runtime.run_s.add(service_s)
        container.last_used_s = self.now_s
        level = runtime.in_flight
        vacated = runtime.vacated_s
        if level < len(vacated):
            vacated[level] = self.now_s
        elif level < runtime.action.limit:
            vacated += [None] * (level - len(vacated)) + [self.now_s]
        if level == 0 and not runtime.queue:
            runtime.idle_from_s = self.now_s
        self.outstanding -= 1
        if not activation.late:
            self.meter.completed += 1
            self.answer(activation)
        if container.busy == 0:
            self._go_idle(container)
        if container.leaving:
            if container.busy == 0:
                self._leave(container)
            return
        self.policy.freed(container)

    def pull(self, container: Container) -> None:
        """``container`` takes work from its action's queue while it has room for it."""
        runtime = container.action
        queue = runtime.queue
        concurrency = runtime.action.concurrency
        while queue and container.busy < concurrency:
            activation = queue.popleft()
            if not self.expired(activation):
                self.start(container, activation)

    def offer(self, runtime: ActionRuntime) -> None:
        """Hand queued work to free containers: warm before paused, most recent first."""
        concurrency = runtime.action.concurrency
        while runtime.queue:
            best: Container | None = None
            for c in runtime.containers:
                # better: not paused over paused, then the most recently used
                if (
                    c.ready
                    and not c.leaving
                    and c.busy < concurrency
                    and (
                        best is None or (best.paused, c.last_used_s) > (c.paused, best.last_used_s)
                    )
                ):
                    best = c
            if best is None:
                return
            self.pull(best)

    def _go_idle(self, container: Container) -> None:
        """Count ``container`` as idle from now, and make sure an idle timer is armed."""
        now_s = self.now_s
        container.idle_since_s = now_s
        container.last_used_s = now_s
        self.meter.idle(now_s, container.action.action.memory_mb, starts=True)
        if not container.leaving:
            self._arm(container)

    def _arm(self, container: Container) -> None:
        """Make sure a timer is due at ``container``'s next pause or keep-alive expiry.

        A timer due no later is kept: a container running thousands of short runs
        costs one timer, not one per run, and when it fires it re-arms itself from the
        newest idle start. Only a keep-alive that shrank (learned windows) arms an
        earlier one; the later one is then stale and ignored.
        """
        grace_s = self._pause_grace_s
        keep_alive_s = self.policy.keep_alive_for(container)
        if self.policy.pauses and not container.paused and grace_s < keep_alive_s:
            due_s = container.idle_since_s + grace_s
        else:
            due_s = container.idle_since_s + keep_alive_s
        if due_s < container.timer_due_s:
            container.timer_due_s = due_s
            self.events.at(due_s, partial(self._idle_timer, container, due_s))

    def _idle_timer(self, container: Container, due_s: float) -> None:
        if due_s != container.timer_due_s:
            return
        container.timer_due_s = float("inf")
        if container.leaving or container.busy or not container.ready:
            return
        now_s = self.now_s
        grace_s = self._pause_grace_s
        keep_alive_s = self.policy.keep_alive_for(container)
        if now_s >= container.idle_since_s + keep_alive_s:
            self._mark_leaving(container)
            self._leave(container)
            return
        if (
            self.policy.pauses
            and not container.paused
            and now_s >= container.idle_since_s + grace_s
        ):
            container.paused = True
        self._arm(container)

    def retire(
        self, container: Container, on_gone: Callable[[Container], None] | None = None
    ) -> None:
        """Tell ``container`` to take no more work and leave after its current runs."""
        self._mark_leaving(container)
        container.on_gone = on_gone
        if container.busy == 0:
            self._leave(container)

    def _mark_leaving(self, container: Container) -> None:
        container.leaving = True
        container.action.staying -= 1

    def _leave(self, container: Container) -> None:
        """An idle, leaving container is removed: at once under a push pool (it drops
        the container from its slots before removing it), else after the remove cost
        (a proxy's slot frees when its container is gone)."""
        if self.policy.frees_at_once:
            self._gone(container)
            return
        remove_s = self.cost_rng.uniform(*self._costs.remove_ms) / 1000
        self.events.at(self.now_s + remove_s, partial(self._gone, container))

    def _gone(self, container: Container) -> None:
        runtime = container.action
        invoker = container.invoker
        memory_mb = runtime.action.memory_mb
        idle = container.ready and container.busy == 0
        self.meter.container_removed(self.now_s, memory_mb, idle=idle)
        invoker.used_slots -= 1
        invoker.used_memory_mb -= memory_mb
        invoker.containers.remove(container)
        runtime.containers.remove(container)
        if container.on_gone is not None:
            container.on_gone(container)
        self.policy.removed(container)
