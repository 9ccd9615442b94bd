"""Making room in a full cluster: evict idle containers, shed those above a fair share.

The free slots are shared between actions by the decision itself; this is what happens
when they run out. An action with a backlog and no container — or fewer than its fair
share — would otherwise wait until some other action's idle container reached its
keep-alive, or forever while a trickle keeps every container of a greedy action busy.

Fair shares are max-min over the whole cluster: every action that wants containers gets
an equal part of all slots, an action wanting less than its part keeps only what it
wants, and what it leaves is split between the rest. A starved action's missing
containers are found first among idle containers of other actions, least recently used
first (an eviction costs whoever is evicted a cold start later, so the container that
has waited longest for work goes first). If an action with no container at all still
has no room, the action furthest above its fair share is told to shed one container
after its current run, at most once per scale-in interval. Shedding busy containers for
actions that merely have fewer than their share traded one cold start for another on
every tick the shares moved (a third of all containers churned in the `mixed`
scenario); the decision instead keeps free slots for an action's fair share while it is
still measuring its run time, so that no action gets far above its share in the first
place. Nothing busy is ever killed. Slots already being freed count against what is
still missing, so a removal that the next heartbeat has not reported yet is not asked
for twice.

When no room can be made at all (no free slot, nothing being freed, no idle container —
not even one that has been idle for less than ``min_idle_s`` and so will be evictable
soon — and no action holding more than one container), :attr:`Reclaim.room` is False and
an action with no container rejects new invocations at once rather than letting them
wait until their timeout for a container nothing can provide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class IdleContainers:
    """Idle (not busy) containers of one action on one invoker."""

    action: str
    invoker_id: str
    count: int
    idle_s: float
    """How long the longest idle of them has had no work: the LRU order."""


@dataclass(frozen=True, slots=True)
class Eviction:
    action: str
    invoker_id: str
    count: int
    reason: str


@dataclass(frozen=True, slots=True)
class Claim:
    """What one action has and wants after this tick's free slots were shared."""

    action: str
    existing: int
    """R + K."""
    wanted: int
    """Containers wanted after the action's own caps (limit, partitions)."""
    granted: int
    """Containers the free slots give it this tick."""
    needed: int
    """Containers its current demand keeps busy; idle ones beyond that may be evicted."""
    removing: int = 0
    """Containers already leaving this tick (central scale-in)."""
    may_shed: bool = True
    """False while the action's last scale-in or shed is recent, or containers are
    still being created: containers then keep coming and going on every tick."""


@dataclass(frozen=True, slots=True)
class Reclaim:
    evictions: tuple[Eviction, ...] = ()
    shed: dict[str, int] = field(default_factory=dict)
    """Per action: containers above its fair share to leave after their current run."""
    notes: dict[str, str] = field(default_factory=dict)
    """Per action: why it was given room, or why containers were taken from it."""
    room: bool = True


def fair_shares(wanted: Sequence[int], capacity: int) -> list[int]:
    """Max-min fair split of ``capacity`` whole slots between demands ``wanted``.

    Water-filling: the level rises until the slots run out; a demand below the level
    gets all it wants. The leftover slots of the last level go to the demands listed
    first, so the outcome is reproducible. Σ shares = min(capacity, Σ wanted).
    """
    shares = [0] * len(wanted)
    left = max(0, capacity)
    open_ = [i for i, want in enumerate(wanted) if want > 0]
    while left > 0 and open_:
        level = left // len(open_)
        if level == 0:
            for i in open_[:left]:
                shares[i] += 1
            break
        still_open = []
        for i in open_:
            give = min(level, wanted[i] - shares[i])
            shares[i] += give
            left -= give
            if shares[i] < wanted[i]:
                still_open.append(i)
        open_ = still_open
    return shares


def reclaim(
    claims: Sequence[Claim],
    idle: Sequence[IdleContainers],
    *,
    shares: Sequence[int],
    capacity: int,
    free_slots: int,
    freeing_slots: int = 0,
    min_idle_s: float = 0.0,
) -> Reclaim:
    """The evictions and sheds that give starved actions their fair share; see the module.

    Only containers idle for ``min_idle_s`` or longer may be evicted: one idle for less
    is between two runs of its own action, and evicting it would buy one cold start
    with another.
    """
    waiting_idle = any(group.count > 0 for group in idle)
    idle = [group for group in idle if group.idle_s >= min_idle_s]
    deficits = {
        claim.action: max(0, min(claim.wanted, share) - claim.existing - claim.granted)
        for claim, share in zip(claims, shares, strict=True)
    }
    left_free = free_slots - sum(claim.granted for claim in claims)
    missing = 0 if left_free > 0 else sum(deficits.values()) - freeing_slots
    starved = sorted(action for action, deficit in deficits.items() if deficit > 0)
    notes: dict[str, str] = {}
    for claim, share in zip(claims, shares, strict=True):
        if deficits[claim.action]:
            notes[claim.action] = (
                f"below fair share {share} of {capacity} slots: {deficits[claim.action]} to reclaim"
            )
    evictions, evicted = _evict(claims, idle, set(starved), missing, starved)
    missing -= sum(evicted.values())
    empty = [claim.action for claim in claims if claim.existing == 0 and deficits[claim.action]]
    shed = _shed(claims, shares, evicted, min(missing, len(empty)), starved)
    for action, count in shed.items():
        notes[action] = f"above fair share: shed {count} after their runs for {', '.join(starved)}"
    for eviction in evictions:
        notes.setdefault(eviction.action, eviction.reason)
    room = (
        left_free > 0
        or freeing_slots > 0
        or bool(evictions)
        or bool(shed)
        or _evictable(claims, idle, set(), evicted) > 0
        or waiting_idle
        or any(
            claim.existing - claim.removing - evicted.get(claim.action, 0) > 1 for claim in claims
        )
    )
    return Reclaim(tuple(evictions), shed, notes, room)


def _keep(claims: Sequence[Claim]) -> dict[str, int]:
    """Per action, the containers eviction leaves it: what its demand keeps busy."""
    return {claim.action: max(claim.needed, 0) + claim.removing for claim in claims}


def _evict(
    claims: Sequence[Claim],
    idle: Sequence[IdleContainers],
    protected: set[str],
    missing: int,
    starved: list[str],
) -> tuple[list[Eviction], dict[str, int]]:
    """Least recently used idle containers first, never of a starved action."""
    evictions: list[Eviction] = []
    evicted: dict[str, int] = {}
    if missing <= 0:
        return evictions, evicted
    spare = _spare(claims, idle)
    for group in sorted(idle, key=lambda g: (-g.idle_s, g.action, g.invoker_id)):
        if missing <= 0:
            break
        if group.action in protected:
            continue
        count = min(group.count, spare.get(group.action, group.count), missing)
        if count <= 0:
            continue
        spare[group.action] = spare.get(group.action, group.count) - count
        evicted[group.action] = evicted.get(group.action, 0) + count
        missing -= count
        evictions.append(
            Eviction(
                group.action,
                group.invoker_id,
                count,
                f"evict {count} idle for {group.idle_s:.1f}s (LRU) to make room for "
                f"{', '.join(starved)}",
            )
        )
    return evictions, evicted


def _spare(claims: Sequence[Claim], idle: Sequence[IdleContainers]) -> dict[str, int]:
    """Per action, the idle containers it can lose without starving its own demand."""
    existing = {claim.action: claim.existing for claim in claims}
    keep = _keep(claims)
    idle_total: dict[str, int] = {}
    for group in idle:
        idle_total[group.action] = idle_total.get(group.action, 0) + group.count
    return {
        action: min(count, max(0, existing[action] - keep[action])) if action in existing else count
        for action, count in idle_total.items()
    }


def _evictable(
    claims: Sequence[Claim],
    idle: Sequence[IdleContainers],
    protected: set[str],
    evicted: dict[str, int],
) -> int:
    spare = _spare(claims, idle)
    return sum(
        max(0, count - evicted.get(action, 0))
        for action, count in spare.items()
        if action not in protected
    )


def _shed(
    claims: Sequence[Claim],
    shares: Sequence[int],
    evicted: dict[str, int],
    missing: int,
    starved: list[str],
) -> dict[str, int]:
    """Actions furthest above their fair share give up containers first."""
    shed: dict[str, int] = {}
    if missing <= 0:
        return shed
    over = sorted(
        (
            (
                claim.existing - claim.removing - evicted.get(claim.action, 0) - share,
                claim.action,
            )
            for claim, share in zip(claims, shares, strict=True)
            if claim.action not in starved and not claim.granted and claim.may_shed
        ),
        reverse=True,
    )
    for excess, action in over:
        if missing <= 0 or excess <= 0:
            break
        count = min(excess, missing)
        shed[action] = count
        missing -= count
    return shed
