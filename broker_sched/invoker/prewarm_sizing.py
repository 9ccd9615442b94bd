"""How many stem cells a prewarm pool should hold, and which to replace: pure arithmetic.

OpenWhisk's two modes: a fixed pool refilled to its initial count as cells are taken,
and a reactive one sized every window from the cold starts it failed to prevent (its
misses), between a minimum and a maximum. Either way a cell unused for the ttl is
removed, so an idle pool does not hold a stale interpreter forever, and replaced only
if the target still wants it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from broker_sched.config import PrewarmPoolSettings


def pool_target(pool: PrewarmPoolSettings, misses_last_window: int | None) -> int:
    """The cells ``pool`` should hold; ``None``: no window has ended yet (initial count).

    Reactive: ``misses // threshold * increment`` within ``min_count..max_count``, so
    a window with no miss shrinks the pool to its minimum.
    """
    if not pool.reactive or misses_last_window is None:
        return pool.initial_count
    wanted = max(0, misses_last_window) // pool.threshold * pool.increment
    return min(pool.max_count, max(pool.min_count, wanted))


@dataclass(frozen=True, slots=True)
class PoolPlan:
    start: int
    """Stem cells to start now (room permitting)."""
    remove_stale: int
    """The oldest cells past the ttl, to remove."""
    remove_surplus: int
    """Fresh cells above the target, to remove (oldest first)."""


def plan_pool(target: int, ages_s: Sequence[float], starting: int, ttl_s: float) -> PoolPlan:
    """What to do for a pool with ready cells of ``ages_s`` and ``starting`` on their way."""
    stale = sum(1 for age_s in ages_s if age_s >= ttl_s)
    fresh = len(ages_s) - stale
    surplus = max(0, fresh - max(0, target))
    return PoolPlan(
        start=max(0, target - fresh - max(0, starting)),
        remove_stale=stale,
        remove_surplus=surplus,
    )
