"""The ``acs`` policy in virtual time: the real ``decide()`` and ``place()`` every tick.

This mirrors the backlog monitor and the controller's admission step, with the broker
replaced by each action's FIFO queue and heartbeats by the cluster as it is:

- an invocation is rejected at once while its action is throttled, or when it has no
  container and the last decision found no room could be made; otherwise it is queued,
  and a free container of the action pulls it at once;
- every ``check_interval_s`` (and at once when an action with no container gets an
  invocation, the "poke") a :class:`Snapshot` of the active actions goes to ``decide()``;
  evictions, creations (through ``place()``) and removals are carried out as the
  monitor does, and each decision's ``needed`` feeds the action's stable window;
- a container told to leave takes no more work and leaves after its current run; its
  slot counts as being freed until the remove cost has passed.

The monitor's notion of "active" (recent invocations, a backlog, or any container) is
kept; of those, an action with nothing to decide is left out of the snapshot (see
:meth:`AcsPolicy._state`), and idle containers are listed only for a full cluster.
Both change no decision and are what keep hours of traffic cheap.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from broker_sched.config import Settings
from broker_sched.scheduler.decision import ActionDecision, ActionState, Snapshot, decide
from broker_sched.scheduler.placement import InvokerView, place
from broker_sched.scheduler.rates import WindowMax
from broker_sched.scheduler.reclaim import Eviction, IdleContainers
from broker_sched.simulator.engine import BoundPolicy
from broker_sched.simulator.metrics import TickDecision
from broker_sched.simulator.model import ActionRuntime, Activation, Container


class AcsPolicy(BoundPolicy):
    name = "acs"
    pauses = True
    frees_at_once = False

    def __init__(self, settings: Settings) -> None:
        self.scheduler = settings.scheduler
        self.keep_alive_s = settings.invoker.keep_alive_s
        self._linger_s = self.keep_alive_s + 5 * self.scheduler.check_interval_s
        self._arrival_window_s = self.scheduler.arrival_window_s
        """No arrival for longer than this: λ is 0 without asking the rate."""
        self._active: dict[int, ActionRuntime] = {}
        self._demand: dict[int, WindowMax] = {}
        self._room = True
        self._tick_due_s: float | None = None
        self._ticks = 0
        self._freeing = 0

    def arrive(self, activation: Activation) -> None:
        engine = self.engine
        runtime = activation.action
        existing = runtime.staying
        if runtime.throttled or (not self._room and existing == 0):
            engine.reject(activation)
            return
        engine.accept(activation)
        now_s = engine.now_s
        runtime.arrivals.record(now_s)
        runtime.last_active_s = runtime.last_arrival_s = now_s
        if runtime.index not in self._active:
            self._active[runtime.index] = runtime
            self._demand.setdefault(runtime.index, WindowMax(self.scheduler.stable_window_s))
        engine.offer(runtime)
        self._schedule(now_s if existing == 0 else now_s + self.scheduler.check_interval_s)

    def ready(self, container: Container) -> None:
        self.engine.pull(container)

    def freed(self, container: Container) -> None:
        self.engine.pull(container)

    def removed(self, container: Container) -> None:
        """Nothing to do: the next tick sees the free slot."""

    # --- ticks ----------------------------------------------------------------------

    def _schedule(self, due_s: float) -> None:
        """Tick at ``due_s`` unless a tick is due sooner (a poke moves the next one up)."""
        if self._tick_due_s is not None and self._tick_due_s <= due_s:
            return
        self._ticks += 1
        self._tick_due_s = due_s
        self.engine.events.at(due_s, partial(self._tick, self._ticks))

    def _tick(self, ticket: int) -> None:
        if ticket != self._ticks:
            return
        self._tick_due_s = None
        engine = self.engine
        now_s = engine.now_s
        tracked = self._still_active(now_s)
        if not tracked:
            self._room = True  # no container anywhere: every slot is free
            return  # until the next invocation: a tick of nothing decides nothing
        active: list[ActionRuntime] = []
        states: list[ActionState] = []
        for runtime in tracked:
            state = self._state(runtime, now_s)
            if state is not None:
                active.append(runtime)
                states.append(state)
        free_slots = sum(max(0, invoker.free_slots) for invoker in engine.invokers)
        snapshot = Snapshot(now_s, tuple(states), free_slots, freeing_slots=self._freeing)
        if not active and (free_slots or self._freeing):
            self._room = True
            self._schedule(now_s + self.scheduler.check_interval_s)
            return
        decision = decide(snapshot, self.scheduler)
        if free_slots <= sum(decided.create for decided in decision.actions):
            # Idle containers matter only to a full cluster (evictions, room): listing
            # them costs a pass over every container, so only then.
            decision = decide(replace(snapshot, idle=self._idle(now_s)), self.scheduler)
        engine.meter.decide_calls += 1
        self._room = decision.room
        views = {
            invoker.id: InvokerView(invoker.id, invoker.free_slots, invoker.free_memory_mb)
            for invoker in engine.invokers
        }
        for eviction in decision.evictions:
            self._evict(eviction)
        for runtime, decided in zip(active, decision.actions, strict=True):
            self._demand[runtime.index].add(now_s, decided.needed)
            self._act(runtime, decided, views)
        if engine.meter.record_decisions:
            engine.meter.decisions += [
                TickDecision(now_s, d.action, d.rule, d.create, d.remove, d.needed, d.desired)
                for d in decision.actions
            ]
        self._schedule(now_s + self.scheduler.check_interval_s)

    def _still_active(self, now_s: float) -> list[ActionRuntime]:
        """The monitor's active actions: recent invocations, a backlog, or containers."""
        active: list[ActionRuntime] = []
        for index, runtime in list(self._active.items()):
            if runtime.queue or runtime.in_flight:
                runtime.last_active_s = now_s
            if now_s - runtime.last_active_s <= self._linger_s or runtime.containers:
                active.append(runtime)
            else:
                del self._active[index]
        return active

    def _state(self, runtime: ActionRuntime, now_s: float) -> ActionState | None:
        """The action's :class:`ActionState`, or None when it is quiescent.

        Quiescent: nothing pending, running, arriving or being created, not throttled,
        and no central scale-in possible (its stable demand unknown, or as high as what
        runs). ``decide()`` could only answer "idle, nothing to do" for it, with a
        ``needed`` of 0 that leaves the stable window's maximum as it is, and its idle
        containers still reach the snapshot's ``idle`` (for eviction) when the cluster
        is full. Leaving it out therefore changes no decision, and it is what makes
        hours of a trace with thousands of rarely called actions cheap.
        """
        if not runtime.queue:
            runtime.backlog_since_s = None
        elif runtime.backlog_since_s is None:
            runtime.backlog_since_s = now_s
        existing = runtime.staying
        busy = runtime.queue or runtime.in_flight or runtime.creating or runtime.throttled
        arriving = now_s - runtime.last_arrival_s <= self._arrival_window_s
        if not (busy or arriving or existing > 1):
            return None  # the cheap test first: most tracked actions of a trace are idle
        rate_per_s = runtime.arrivals.rate_per_s(now_s) if arriving else 0.0
        stable = self._demand[runtime.index].value(now_s)
        if not (
            busy or rate_per_s > 0 or (existing > 1 and stable is not None and stable < existing)
        ):
            return None
        action = runtime.action
        return ActionState(
            action=action.name,
            pending=len(runtime.queue),
            in_flight=runtime.in_flight,
            arrival_rate_per_s=rate_per_s,
            running=existing - runtime.creating,
            creating=runtime.creating,
            mean_run_s=runtime.run_s.value,
            concurrency=action.concurrency,
            cold_start_s=runtime.cold_start_s.value,
            limit=action.limit,
            partitions=None,
            throttled=runtime.throttled,
            stable_demand=stable,
            last_scale_in_s=runtime.last_scale_in_s,
            backlog_since_s=runtime.backlog_since_s,
        )

    def _idle(self, now_s: float) -> tuple[IdleContainers, ...]:
        """Idle containers per action and invoker, longest idle first within a group."""
        groups: dict[tuple[str, str], list[float]] = {}
        for invoker in self.engine.invokers:
            for container in invoker.containers:
                if container.ready and not container.busy and not container.leaving:
                    key = (container.action.name, invoker.id)
                    groups.setdefault(key, []).append(now_s - container.idle_since_s)
        return tuple(
            IdleContainers(action, invoker_id, len(idle_s), max(idle_s))
            for (action, invoker_id), idle_s in groups.items()
        )

    # --- carrying a decision out ------------------------------------------------------

    def _act(
        self, runtime: ActionRuntime, decided: ActionDecision, views: dict[str, InvokerView]
    ) -> None:
        engine = self.engine
        runtime.throttled = decided.throttled
        action = runtime.action
        for _ in range(decided.create):
            placement = place(views.values(), action.name, action.memory_mb, self.rng)
            if placement is None:
                break
            chosen = views[placement.invoker_id]
            views[placement.invoker_id] = InvokerView(
                chosen.invoker_id,
                chosen.free_slots - 1,
                chosen.free_memory_mb - action.memory_mb,
            )
            engine.create(runtime, engine.invoker_by_id[placement.invoker_id])
        if decided.remove:
            runtime.last_scale_in_s = engine.now_s
            candidates = [c for c in runtime.containers if c.ready and not c.leaving]
            for container in sorted(candidates, key=_leaving_order)[: decided.remove]:
                engine.meter.scaled_in += 1
                self._retire(container)

    def _evict(self, eviction: Eviction) -> None:
        engine = self.engine
        invoker = engine.invoker_by_id[eviction.invoker_id]
        candidates = [
            c
            for c in invoker.containers
            if c.action.name == eviction.action and c.ready and not c.leaving
        ]
        for container in sorted(candidates, key=_leaving_order)[: eviction.count]:
            engine.meter.evictions += 1
            self._retire(container)

    def _retire(self, container: Container) -> None:
        """Tell ``container`` to leave after its current runs; its slot is being freed
        until the remove cost has passed."""
        self._freeing += 1
        self.engine.retire(container, on_gone=self._gone)

    def _gone(self, container: Container) -> None:
        self._freeing -= 1


def _leaving_order(container: Container) -> tuple[int, bool, float]:
    """Which container leaves first, as the invoker picks: the least busy, a paused one,
    then the longest idle."""
    return (container.busy, not container.paused, container.idle_since_s)
