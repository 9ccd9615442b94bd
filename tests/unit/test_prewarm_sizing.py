"""Prewarm pool sizing: fixed and reactive targets, ttl and surplus removal."""

from __future__ import annotations

import pytest

from broker_sched.config import PrewarmPoolSettings, PrewarmSettings, load_settings
from broker_sched.errors import ConfigError
from broker_sched.invoker.prewarm_sizing import PoolPlan, plan_pool, pool_target

FIXED = PrewarmPoolSettings(initial_count=3, min_count=0, max_count=1)
REACTIVE = PrewarmPoolSettings(
    initial_count=2, min_count=1, max_count=6, reactive=True, threshold=2, increment=3
)


@pytest.mark.parametrize("misses", [None, 0, 1, 50])
def test_a_fixed_pool_keeps_its_initial_count_whatever_it_missed(misses: int | None) -> None:
    assert pool_target(FIXED, misses) == 3


@pytest.mark.parametrize(
    ("misses", "target"),
    [(None, 2), (0, 1), (1, 1), (2, 3), (3, 3), (4, 6), (5, 6), (40, 6), (-3, 1)],
)
def test_a_reactive_pool_grows_by_increment_per_threshold_misses_within_min_max(
    misses: int | None, target: int
) -> None:
    assert pool_target(REACTIVE, misses) == target


def test_a_reactive_pool_with_minimum_zero_empties_after_a_window_without_misses() -> None:
    pool = PrewarmPoolSettings(initial_count=1, min_count=0, max_count=2, reactive=True)
    assert pool_target(pool, 0) == 0


@pytest.mark.parametrize(
    ("target", "ages", "starting", "plan"),
    [
        (2, [], 0, PoolPlan(start=2, remove_stale=0, remove_surplus=0)),
        (2, [], 1, PoolPlan(start=1, remove_stale=0, remove_surplus=0)),
        (2, [], 5, PoolPlan(start=0, remove_stale=0, remove_surplus=0)),
        (2, [1.0, 2.0], 0, PoolPlan(start=0, remove_stale=0, remove_surplus=0)),
        (2, [11.0, 2.0], 0, PoolPlan(start=1, remove_stale=1, remove_surplus=0)),
        (2, [10.0, 10.0], 0, PoolPlan(start=2, remove_stale=2, remove_surplus=0)),
        (1, [3.0, 2.0, 1.0], 0, PoolPlan(start=0, remove_stale=0, remove_surplus=2)),
        (0, [12.0, 1.0], 0, PoolPlan(start=0, remove_stale=1, remove_surplus=1)),
        (-1, [1.0], -2, PoolPlan(start=0, remove_stale=0, remove_surplus=1)),
    ],
)
def test_plan_replaces_stale_cells_and_trims_to_the_target(
    target: int, ages: list[float], starting: int, plan: PoolPlan
) -> None:
    assert plan_pool(target, ages, starting, ttl_s=10.0) == plan


def test_bad_pool_settings_name_the_problem() -> None:
    with pytest.raises(ValueError, match="min_count 3 > max_count 1"):
        PrewarmPoolSettings(min_count=3, max_count=1)
    with pytest.raises(ValueError, match="initial_count 9 is outside"):
        PrewarmPoolSettings(initial_count=9, max_count=4, reactive=True)
    with pytest.raises(ValueError, match="more than one pool for python:256"):
        PrewarmSettings(pools=[PrewarmPoolSettings(), PrewarmPoolSettings(initial_count=1)])
    with pytest.raises(ConfigError, match=r"prewarm\.pools\.0\.memory_mb"):
        load_settings(prewarm={"pools": [{"memory_mb": 0}]})
