"""Where a new container goes: the invoker choice, from the invokers' heartbeats.

The decision says how many containers an action gets; placement says where each one
runs. Resuming a paused container of the same action is cheaper than any cold start
(Docker: 50-425 ms against 500-1300 ms) and needs no new slot, so it wins outright.
Otherwise the roomiest invoker gets the container, which spreads actions out instead of
packing them (packing is what made the classic home-invoker scheme evict). Ties are
broken with the caller's ``random.Random`` so several controllers do not all pick the
same invoker, while a seeded run stays reproducible.

What can go wrong: heartbeats are up to one interval old, so an invoker may turn a
request down; the caller handles that reply, placement only avoids invokers that
certainly cannot fit or have stopped beating (:func:`live_invokers`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class InvokerView:
    """One invoker as its last heartbeat described it."""

    invoker_id: str
    free_slots: int
    free_memory_mb: int
    paused: Mapping[str, int] = field(default_factory=dict)
    """Paused containers per action (``namespace/name``)."""


@dataclass(frozen=True, slots=True)
class Placement:
    invoker_id: str
    resume: bool = False
    """True when the invoker has a paused container of the action to resume."""


def place(
    invokers: Iterable[InvokerView], action_fqn: str, memory_mb: int, rng: random.Random
) -> Placement | None:
    """The invoker for one more container of ``action_fqn``, or None if none can fit it.

    A paused container of the action comes first (on the roomiest invoker that has one);
    else the invoker with the most free slots, then the most free memory, among those
    with at least one free slot and ``memory_mb`` free.
    """
    candidates = list(invokers)
    with_paused = [view for view in candidates if view.paused.get(action_fqn, 0) > 0]
    if with_paused:
        return Placement(_roomiest(with_paused, rng).invoker_id, resume=True)
    fitting = [
        view for view in candidates if view.free_slots >= 1 and view.free_memory_mb >= memory_mb
    ]
    if not fitting:
        return None
    return Placement(_roomiest(fitting, rng).invoker_id, resume=False)


def live_invokers(
    heartbeats: Mapping[str, float], now_s: float, interval_s: float, expiry_beats: int
) -> list[str]:
    """Invokers (id → time its last heartbeat arrived) that have not missed too many beats.

    An invoker expires once its last beat is more than ``expiry_beats * interval_s`` old;
    exactly that old still counts as live. Times are on the caller's clock (monotonic).
    """
    expiry_s = interval_s * expiry_beats
    return [invoker for invoker, seen_s in heartbeats.items() if now_s - seen_s <= expiry_s]


def _roomiest(views: list[InvokerView], rng: random.Random) -> InvokerView:
    best = max((view.free_slots, view.free_memory_mb) for view in views)
    tied = sorted(
        (view for view in views if (view.free_slots, view.free_memory_mb) == best),
        key=lambda view: view.invoker_id,
    )
    return tied[0] if len(tied) == 1 else rng.choice(tied)
