"""The scaling decision (policy ``acs``): how many containers each action gets this tick.

A pure function over what the backlog monitor measured, so every rule of
docs/scaling.md can be tested with plain numbers, and every tick records why it created,
removed or evicted what it did (:attr:`ActionDecision.reason`, one line with the inputs
and the rule that fired).

``d`` is the service time a container spends per activation (fetch to ack: run, reply,
ack and the fetch that brought it), not the handler's run time: for a 0 ms noop on a
network broker the difference is the whole capacity estimate.

What can go wrong is mostly the measurements: a mean service time of zero, a backlog a
broker reported as negative, a rate that is NaN. Every input is clamped to a meaningful
range first (:func:`_normalize`), so no rule divides by zero and nothing is negative.

Choices beyond the plain rules, each recorded in the reason:
- An action with activations in flight but no container it knows of (R + K = 0) gets the
  "poke" too: those deliveries were handed to a consumer that is gone, and on Redis or
  NATS only a member of the group can ever pick them up again.
- Until a service time is measured the action grows by slow start: at most twice the
  containers that are up (one while none is), so a guess of d cannot fill the cluster
  before the first run says how long runs take.
- Until a cold start has been measured, C is :data:`DEFAULT_COLD_START_S`.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from broker_sched.config import SchedulerSettings
from broker_sched.scheduler.reclaim import (
    Claim,
    Eviction,
    IdleContainers,
    Reclaim,
    fair_shares,
    reclaim,
)

DEFAULT_COLD_START_S = 0.7
"""Cold start C assumed until measured: a typical Docker create + init (≈ 700 ms).

Erring long only makes rule 3 wait a little longer for busy containers before creating;
the first measured cold start replaces it.
"""

MIN_RUN_S = 1e-6
"""A measured mean run time below this (zero included) counts as this: a division guard."""

_CEIL_SLACK = 1e-9
"""Relative slack so that float noise (8 * 0.1 / 0.8 = 1.0000000000000002) is not one more
container."""


@dataclass(frozen=True, slots=True)
class ActionState:
    """One action's measurements for one tick (letters as in docs/scaling.md)."""

    action: str
    """``namespace/name``."""
    pending: int
    """P: appended, not yet delivered to the action's group."""
    in_flight: int
    """F: delivered, not yet acked."""
    arrival_rate_per_s: float
    """λ: activations per second over the last ``arrival_window_s``."""
    running: int
    """R: containers ready or busy, paused ones that count as ready included."""
    creating: int
    """K: containers requested and not yet confirmed."""
    mean_run_s: float | None
    """d: mean service time of the last activations (fetch to ack); None until measured."""
    concurrency: int
    """c: activations one container runs at once."""
    cold_start_s: float | None
    """C: mean create + init; None until measured (:data:`DEFAULT_COLD_START_S`)."""
    limit: int
    """L: the action's container limit."""
    partitions: int | None
    """Partition count on partitioned transports (a consumer beyond it idles), else None."""
    throttled: bool
    """Throttle state after the previous tick, for the hysteresis of rule 6."""
    last_resize_s: float | None = None
    """When this action's partitions were last grown (same clock as ``now_s``)."""
    stable_demand: int | None = None
    """The most containers :attr:`ActionDecision.needed` asked for over the stable
    window; None until the action has been watched for that long (no central scale-in)."""
    last_scale_in_s: float | None = None
    """When containers of this action were last told to leave (same clock as ``now_s``)."""
    backlog_since_s: float | None = None
    """Since when P has been above zero at every tick (None: nothing pending now)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    now_s: float
    actions: tuple[ActionState, ...]
    free_slots: int
    """Free container slots in the whole cluster, shared by all actions of the snapshot."""
    idle: tuple[IdleContainers, ...] = ()
    """Idle containers per action and invoker, the candidates for eviction."""
    freeing_slots: int = 0
    """Slots that removals already asked for will free (not free yet, not to reclaim again)."""


@dataclass(frozen=True, slots=True)
class ActionDecision:
    action: str
    create: int
    """Containers to request now (≥ 0); always ``max(0, desired - (R + K))``."""
    desired: int
    """Total containers wanted after every cap (may be below R + K: rule 8)."""
    throttled: bool
    """New throttle state: reject new invocations with 429 while True."""
    resize_partitions_to: int | None
    """Grow the action's partitions to this now (rule 4), else None."""
    wait_s: float
    """W = P·d / (c·(R + K)): the backlog's estimated queueing wait (inf with no container)."""
    rule: str
    """Short tag: poke, sustained, burst-wait, burst-drain, steady, idle, scale-in, or the
    cap that cut ``create``: capped-limit, capped-partitions, capped-capacity."""
    reason: str
    """One line: the inputs, the numbers the rule used, the caps and the outcome."""
    needed: int = 0
    """Containers the demand of this tick needs (the stable window's sample)."""
    remove: int = 0
    """Containers to tell to leave after their current run (scale-in or fair share)."""
    rejecting: bool = False
    """No container exists and none can be made: reject new invocations at once."""


@dataclass(frozen=True, slots=True)
class Decision:
    actions: tuple[ActionDecision, ...]
    evictions: tuple[Eviction, ...] = ()
    """Idle containers of other actions to remove so that starved actions get room."""
    room: bool = True
    """Whether an action with no container could get one now (a free slot, a slot being
    freed, or an idle container to evict); False: reject first invocations at once."""

    def for_action(self, action: str) -> ActionDecision | None:
        return next((decided for decided in self.actions if decided.action == action), None)


def decide(snapshot: Snapshot, settings: SchedulerSettings) -> Decision:
    """Apply the rules of docs/scaling.md to every action of ``snapshot``.

    Each action's demand and caps are worked out on their own; the cluster's free slots
    are then shared between them (:func:`_share`), which is where they compete; what the
    free slots cannot give is reclaimed from idle containers and from actions above
    their fair share (:func:`~broker_sched.scheduler.reclaim.reclaim`).
    Raises ValueError if an action appears twice (its demand would be counted twice).
    """
    names = [state.action for state in snapshot.actions]
    if len(set(names)) != len(names):
        raise ValueError(f"snapshot lists an action more than once: {sorted(names)}")
    plans = [_plan(state, snapshot.now_s, settings) for state in snapshot.actions]
    free_slots = max(0, snapshot.free_slots)
    claimed = set(names)
    capacity = (
        free_slots
        + sum(plan.inputs.existing for plan in plans)
        + sum(group.count for group in snapshot.idle if group.action not in claimed)
    )
    shares = fair_shares([plan.demand for plan in plans], capacity)
    grants = _share(plans, free_slots, shares)
    reclaimed = reclaim(
        [
            _claim(plan, grant, state, snapshot.now_s, settings)
            for plan, grant, state in zip(plans, grants, snapshot.actions, strict=True)
        ],
        snapshot.idle,
        shares=shares,
        capacity=capacity,
        free_slots=free_slots,
        freeing_slots=max(0, snapshot.freeing_slots),
        min_idle_s=settings.evict_min_idle_s,
    )
    return Decision(
        tuple(
            _conclude(plan, grant, free_slots, reclaimed)
            for plan, grant in zip(plans, grants, strict=True)
        ),
        evictions=reclaimed.evictions,
        room=reclaimed.room,
    )


def _claim(
    plan: _Plan, grant: int, state: ActionState, now_s: float, settings: SchedulerSettings
) -> Claim:
    x = plan.inputs
    last_s = state.last_scale_in_s
    return Claim(
        action=x.action,
        existing=x.existing,
        wanted=plan.demand,
        granted=grant,
        needed=plan.needed,
        removing=plan.scale_in,
        may_shed=x.creating == 0
        and (last_s is None or now_s - last_s >= settings.scale_in_interval_s),
    )


@dataclass(frozen=True, slots=True)
class _Inputs:
    """An :class:`ActionState` clamped to meaningful values (see :func:`_normalize`)."""

    action: str
    pending: int
    in_flight: int
    rate_per_s: float
    running: int
    creating: int
    concurrency: int
    run_s: float
    run_s_measured: bool
    cold_start_s: float
    cold_start_measured: bool
    limit: int
    partitions: int | None
    backlog_age_s: float

    @property
    def existing(self) -> int:
        """R + K: what already exists or is on its way."""
        return self.running + self.creating

    @property
    def capacity_per_s(self) -> float:
        """μ = (R + K)·c / d."""
        return self.existing * self.concurrency / self.run_s

    def describe(self) -> str:
        run = "" if self.run_s_measured else " (unmeasured: T)"
        cold = "" if self.cold_start_measured else " (assumed)"
        return (
            f"P={self.pending} F={self.in_flight} λ={_num(self.rate_per_s)}/s "
            f"R={self.running} K={self.creating} c={self.concurrency} "
            f"d={_num(self.run_s)}s{run} C={_num(self.cold_start_s)}s{cold} "
            f"μ={_num(self.capacity_per_s)}/s"
        )


@dataclass(frozen=True, slots=True)
class _Plan:
    """One action's demand and caps, before the free slots are shared."""

    inputs: _Inputs
    rule: str
    wanted: int
    """Containers the rule asks for, before any cap."""
    demand: int
    """The claim its fair share is computed from: what the rule wants (slow start not
    applied), at least what is busy, within the caps — or, while d is unmeasured, the
    caps themselves, since nothing yet says how little it might need."""
    explanation: str
    throttled: bool
    throttle_note: str
    resize_to: int | None
    resize_note: str
    needed: int
    scale_in: int
    """Containers central scale-in removes this tick (0 while anything is wanted)."""
    scale_in_note: str

    @property
    def cap(self) -> int:
        """The per-action caps of rule 4: the limit and, if partitioned, the partitions."""
        partitions = self.inputs.partitions
        return self.inputs.limit if partitions is None else min(self.inputs.limit, partitions)

    @property
    def room(self) -> int:
        """Containers the per-action caps let this tick create."""
        return max(0, min(self.wanted, self.cap) - self.inputs.existing)


def _normalize(state: ActionState, now_s: float, settings: SchedulerSettings) -> _Inputs:
    measured_run = _usable(state.mean_run_s)
    measured_cold = _usable(state.cold_start_s)
    rate = state.arrival_rate_per_s
    return _Inputs(
        action=state.action,
        pending=max(0, state.pending),
        in_flight=max(0, state.in_flight),
        rate_per_s=rate if math.isfinite(rate) and rate > 0 else 0.0,
        running=max(0, state.running),
        creating=max(0, state.creating),
        concurrency=max(1, state.concurrency),
        run_s=settings.target_wait_s if measured_run is None else max(MIN_RUN_S, measured_run),
        run_s_measured=measured_run is not None,
        cold_start_s=DEFAULT_COLD_START_S if measured_cold is None else measured_cold,
        cold_start_measured=measured_cold is not None,
        limit=max(0, state.limit),
        partitions=None if state.partitions is None else max(0, state.partitions),
        backlog_age_s=0.0
        if state.backlog_since_s is None
        else max(0.0, now_s - state.backlog_since_s),
    )


def _usable(measured_s: float | None) -> float | None:
    """A duration that is missing, negative or not a number is treated as not measured."""
    if measured_s is None or not math.isfinite(measured_s) or measured_s < 0:
        return None
    return measured_s


def _plan(state: ActionState, now_s: float, settings: SchedulerSettings) -> _Plan:
    inputs = _normalize(state, now_s, settings)
    rule, wanted, explanation = _demand(inputs, settings)
    busy = _ceil(inputs.in_flight / inputs.concurrency)
    cap = inputs.limit if inputs.partitions is None else min(inputs.limit, inputs.partitions)
    demand = min(max(wanted, busy), cap) if inputs.run_s_measured else cap
    if not inputs.run_s_measured and wanted > inputs.existing:
        start_cap = max(1, 2 * inputs.running)
        if wanted > start_cap:
            wanted = max(inputs.existing, start_cap)
            explanation += f"; slow start until d is measured: ≤ 2·R = {start_cap}"
    throttled, throttle_note = _throttle(inputs, state.throttled, settings)
    resize_to, resize_note = _resize(inputs, wanted, state.last_resize_s, now_s, settings)
    needed = _needed(inputs, settings)
    scale_in, scale_in_note = _scale_in(inputs, wanted, state, now_s, settings)
    return _Plan(
        inputs=inputs,
        rule=rule,
        wanted=wanted,
        demand=demand,
        explanation=explanation,
        throttled=throttled,
        throttle_note=throttle_note,
        resize_to=resize_to,
        resize_note=resize_note,
        needed=needed,
        scale_in=scale_in,
        scale_in_note=scale_in_note,
    )


def _needed(x: _Inputs, settings: SchedulerSettings) -> int:
    """What this tick's demand needs: the arrivals at the target utilization, and at
    least the containers busy now; 0 only when nothing arrives or runs."""
    for_rate = _for_rate(x, settings)
    busy = _ceil(x.in_flight / x.concurrency)
    return min(max(for_rate, busy), x.limit)


def _for_rate(x: _Inputs, settings: SchedulerSettings) -> int:
    """The rate term ceil(λ·d/(c·u)), capped by the calls there is evidence of.

    λ is counted over ``arrival_window_s`` (1 s): two calls of an action with
    multi-second runs read as λ = 2/s, and λ·d asks for a container per call it
    extrapolates over the whole run time — calls that never come. At a steady rate the
    calls in flight are λ·d already (Little's law), so the cap binds only when λ
    overstates what the action holds: one container per call pending, in flight, or
    seen in the window.
    """
    for_rate = _ceil(x.rate_per_s * x.run_s / (x.concurrency * settings.target_utilization))
    seen = x.rate_per_s * settings.arrival_window_s
    return min(for_rate, _ceil((x.pending + x.in_flight + seen) / x.concurrency))


def _scale_in(
    x: _Inputs, wanted: int, state: ActionState, now_s: float, settings: SchedulerSettings
) -> tuple[int, str]:
    """Central scale-in: members of a group share the work, so under any trickle no
    container of an over-provisioned action is ever idle long enough to leave by itself.

    Containers above the most the demand needed over the stable window leave, at most
    down to ``running / scale_down_rate`` per ``scale_in_interval_s``, never below one
    (scale to zero stays the keep-alive's job) and never while a backlog waits or a
    container is still being created.
    """
    stable = state.stable_demand
    if stable is None or x.pending > 0 or x.creating > 0 or wanted > x.existing:
        return 0, ""
    keep = max(1, stable, _ceil(x.running / settings.scale_down_rate))
    if x.running <= keep:
        return 0, ""
    last_s = state.last_scale_in_s
    if last_s is not None and now_s - last_s < settings.scale_in_interval_s:
        return 0, ""
    remove = x.running - keep
    return remove, (
        f"scale-in: stable demand {stable} over {_num(settings.stable_window_s)}s, "
        f"keep {keep} (÷{_num(settings.scale_down_rate)} at most), remove {remove}"
    )


def _demand(x: _Inputs, settings: SchedulerSettings) -> tuple[str, int, str]:
    """Poke, sustained demand and bursts: the rule that fires, the containers it wants, and why."""
    target_s, utilization = settings.target_wait_s, settings.target_utilization
    if x.existing == 0 and x.pending > 0:
        return "poke", 1, "first activation with no container (R+K=0): create 1 now"
    if x.existing == 0 and x.in_flight > 0:
        return "poke", 1, "in flight with no container (R+K=0): a consumer must take them over"
    if x.pending == 0 and x.rate_per_s == 0:
        return "idle", 0, "nothing pending or arriving"
    mu = x.capacity_per_s
    for_rate = _for_rate(x, settings)
    # A backlog term never asks for more containers than there is work for them: one
    # per pending or running activation, plus what arrives during a cold start.
    useful = _ceil((x.pending + x.in_flight + x.rate_per_s * x.cold_start_s) / x.concurrency)
    if x.rate_per_s >= utilization * mu:
        for_wait = min(useful, _ceil(x.pending * x.run_s / (x.concurrency * target_s)))
        return (
            "sustained",
            max(for_rate, for_wait),
            f"λ ≥ u·μ={_num(utilization * mu)}/s: ceil(λ·d/(c·u))={for_rate}, "
            f"W ≤ T={_num(target_s)}s needs {for_wait} (≤ {useful} with work)",
        )
    if x.pending == 0:
        return "steady", for_rate, f"λ < u·μ={_num(utilization * mu)}/s, no backlog"
    horizon_s = max(target_s, x.cold_start_s)
    if x.backlog_age_s > horizon_s:
        in_system = _ceil((x.pending + x.in_flight) / x.concurrency)
        return (
            "standing",
            max(x.existing + 1, in_system),
            f"a backlog has waited {_num(x.backlog_age_s)}s > max(T,C)={_num(horizon_s)}s: "
            f"not a burst (closed-loop callers refill it); one container per activation "
            f"in the system: ceil((P+F)/c)={in_system}",
        )
    drain_s = x.pending / (mu - x.rate_per_s)
    for_drain = min(useful, _ceil((x.rate_per_s + x.pending / horizon_s) * x.run_s / x.concurrency))
    if drain_s <= horizon_s or useful <= x.existing:
        return (
            "burst-wait",
            min(x.existing, max(for_rate, for_drain)),
            f"λ < u·μ={_num(utilization * mu)}/s: backlog drains in P/(μ-λ)={_num(drain_s)}s "
            f"≤ max(T,C)={_num(horizon_s)}s or no work for more than {useful}: "
            "wait for the previous run",
        )
    return (
        "burst-drain",
        max(x.existing + 1, for_rate, for_drain),
        f"λ < u·μ={_num(utilization * mu)}/s but backlog drains in P/(μ-λ)={_num(drain_s)}s "
        f"> max(T,C)={_num(horizon_s)}s: {for_drain} drain it in time",
    )


def _throttle(x: _Inputs, was_throttled: bool, settings: SchedulerSettings) -> tuple[bool, str]:
    """The throttle, with hysteresis: on above ``max_wait_s``, off only below the release ratio.

    The ceiling is the limit L — or, on a partitioned transport that may not grow its
    partitions, min(L, partitions): consumers beyond the partitions sit idle, so
    waiting for them to help would throttle too late.
    """
    ceiling = x.limit
    if x.partitions is not None and not settings.auto_partitions:
        ceiling = min(ceiling, x.partitions)
    wait_at_limit_s = _wait_s(x.pending, x.run_s, x.concurrency, ceiling)
    max_wait_s = settings.max_wait_s
    release_s = settings.throttle_release_ratio * max_wait_s
    numbers = f"W_L={_seconds(wait_at_limit_s)}"
    if wait_at_limit_s > max_wait_s:
        return True, f"throttled: {numbers} > max_wait_s={_num(max_wait_s)}s"
    if wait_at_limit_s < release_s:
        lifted = "throttle lifted: " if was_throttled else ""
        return False, f"{lifted}{numbers} < release {_num(release_s)}s"
    state = "on" if was_throttled else "off"
    return (
        was_throttled,
        f"throttle stays {state}: {_num(release_s)}s ≤ {numbers} ≤ {_num(max_wait_s)}s",
    )


def _resize(
    x: _Inputs,
    wanted: int,
    last_resize_s: float | None,
    now_s: float,
    settings: SchedulerSettings,
) -> tuple[int | None, str]:
    """Partition growth, when the partition count is what stops creation.

    Growing beyond the limit would only add idle partitions, so the target is
    ``min(wanted, L)``; when nothing more is wanted than exists, the partitions stop
    nothing and a resize would be a rebalance for no gain. The rebalance every resize
    causes is also why there is a cooldown.
    """
    target = min(wanted, x.limit)
    if x.partitions is None or x.partitions >= target or x.existing >= target:
        return None, ""
    if not settings.auto_partitions:
        return None, f"partitions={x.partitions} bind (auto_partitions off)"
    if last_resize_s is not None:
        left_s = settings.resize_cooldown_s - (now_s - last_resize_s)
        if left_s > 0:
            return None, f"partitions={x.partitions} bind; resize cooldown {_num(left_s)}s left"
    return target, f"resize partitions {x.partitions}→{target} (consumers rebalance)"


def _share(plans: Sequence[_Plan], free_slots: int, shares: Sequence[int]) -> list[int]:
    """Caps and fairness: split the cluster's free slots between actions (max-min).

    First every action may grow up to its fair share of the whole cluster; only when no
    action is left below its share with demand it cannot meet yet (one in slow start,
    say) do the remaining free slots go to those that want more. So the first action
    whose run time is measured cannot take the whole cluster while the others are still
    finding out theirs.
    """
    fair = [
        min(plan.room, max(0, share - plan.inputs.existing))
        for plan, share in zip(plans, shares, strict=True)
    ]
    grants = _rounds(plans, fair, free_slots)
    left = free_slots - sum(grants)
    unmet = any(
        not plan.inputs.run_s_measured and min(plan.demand, share) > plan.inputs.existing + grant
        for plan, share, grant in zip(plans, shares, grants, strict=True)
    )
    if left <= 0 or unmet:
        return grants
    extra = _rounds(
        plans, [plan.room - grant for plan, grant in zip(plans, grants, strict=True)], left
    )
    return [grant + more for grant, more in zip(grants, extra, strict=True)]


def _rounds(plans: Sequence[_Plan], rooms: list[int], free_slots: int) -> list[int]:
    """Hand ``free_slots`` out in rounds, one container per action with room per round.

    The last, partial round goes to the actions with the fewest containers first (then
    the biggest backlog, then the name, so the outcome is reproducible): an action with
    no container gets its first one before any action gets another. Whole rounds are
    counted at once, so the cost does not grow with the free slots.
    """
    if sum(rooms) <= free_slots:
        return rooms
    rounds = _full_rounds(rooms, free_slots)
    grants = [min(room, rounds) for room in rooms]
    left = free_slots - sum(grants)
    short = sorted(
        (i for i, room in enumerate(rooms) if room > rounds),
        key=lambda i: (plans[i].inputs.existing, -plans[i].inputs.pending, plans[i].inputs.action),
    )
    for i in short[:left]:
        grants[i] += 1
    return grants


def _full_rounds(rooms: Sequence[int], free_slots: int) -> int:
    """The most whole rounds the free slots pay for (binary search; rooms exceed slots)."""
    low, high = 0, max(rooms)
    while low < high:
        middle = (low + high + 1) // 2
        if sum(min(room, middle) for room in rooms) <= free_slots:
            low = middle
        else:
            high = middle - 1
    return low


def _conclude(plan: _Plan, grant: int, free_slots: int, reclaimed: Reclaim) -> ActionDecision:
    x = plan.inputs
    asked = max(0, plan.wanted - x.existing)
    partitions = "-" if x.partitions is None else str(x.partitions)
    caps = f"caps L={x.limit} partitions={partitions} free_slots={free_slots}"
    remove = plan.scale_in + reclaimed.shed.get(x.action, 0)
    rejecting = x.existing == 0 and not reclaimed.room
    if plan.scale_in:
        rule = "scale-in"
    elif grant < plan.room:
        rule, caps = "capped-capacity", f"{caps}: {grant} of {plan.room} fit the free slots"
    elif plan.room < asked:
        bound_by_limit = x.partitions is None or x.limit <= x.partitions
        rule = "capped-limit" if bound_by_limit else "capped-partitions"
        caps = f"{caps}: capped at {plan.cap}"
    else:
        rule = plan.rule
    desired = min(plan.wanted, plan.cap, x.existing + grant)
    wait_s = _wait_s(x.pending, x.run_s, x.concurrency, x.existing)
    if plan.scale_in:
        desired = min(plan.cap, x.existing - remove)
    elif remove:
        desired = min(desired, x.existing - remove)
    notes = [
        f"{rule}: {x.describe()}",
        plan.explanation,
        f"wants {plan.wanted}",
        caps,
        f"desired {desired}, create {grant}",
        f"W={_seconds(wait_s)}",
        plan.throttle_note,
        plan.resize_note,
        plan.scale_in_note,
        reclaimed.notes.get(x.action, ""),
        "rejecting: no container and no room can be made" if rejecting else "",
    ]
    return ActionDecision(
        action=x.action,
        create=grant,
        desired=desired,
        throttled=plan.throttled,
        resize_partitions_to=plan.resize_to,
        wait_s=wait_s,
        rule=rule,
        reason="; ".join(note for note in notes if note),
        needed=plan.needed,
        remove=remove,
        rejecting=rejecting,
    )


def _wait_s(pending: int, run_s: float, concurrency: int, containers: int) -> float:
    """P·d / (c·n): how long the backlog waits on ``containers``; inf when there are none."""
    if pending == 0:
        return 0.0
    if containers == 0:
        return math.inf
    return pending * run_s / (concurrency * containers)


def _ceil(x: float) -> int:
    if not math.isfinite(x):
        return sys.maxsize
    return max(0, math.ceil(x * (1 - _CEIL_SLACK)))


def _num(x: float) -> str:
    return f"{x:.4g}"


def _seconds(x: float) -> str:
    return f"{x:.4g}s" if math.isfinite(x) else "inf (no container)"
