"""Learned keep-alive windows in the simulator, the day trace and the trade-off."""

from __future__ import annotations

import random
from pathlib import Path

from test_simulator import scenario, settings

from broker_sched.config import KeepAliveSettings
from broker_sched.simulator.day_trace import (
    generate_day,
    per_minute_scenario,
    read_records,
    record_scenario,
    write_records,
)
from broker_sched.simulator.engine import Engine
from broker_sched.simulator.keepalive import KeepAlivePolicy
from broker_sched.simulator.model import ClosedLoop, Cluster
from broker_sched.simulator.tradeoff import tradeoff

LEARNED = KeepAliveSettings(policy="learned", min_samples=5)
PERIOD_S = 100.0


def timer(calls: int = 30) -> list[tuple[float, int]]:
    return [(i * PERIOD_S, 0) for i in range(calls)]


def test_a_timer_is_pre_warmed_before_each_call_once_learned() -> None:
    """Every 100 s: after a few idle times the function scales to zero after each run
    and is pre-warmed just before the next: no cold start, about 30 s idle each."""
    tiny = scenario(timer(), duration_s=30 * PERIOD_S)
    policy = KeepAlivePolicy(10.0, learned=LEARNED, name="learned")
    learned = Engine(tiny, settings(), policy).run()
    fixed = Engine(tiny, settings(), KeepAlivePolicy(2 * PERIOD_S, name="fixed")).run()
    # cold until 5 idle times are in (the fallback 10 s keep-alive misses every call)
    assert learned.cold_starts == 6
    assert policy.prewarmed == 25  # 24 calls, and one more ahead of the call after the last
    assert fixed.cold_starts == 1
    # a window of one histogram bin with its margins (87-108 s, less and plus 10 %)
    assert learned.wasted_gb_s < 0.4 * fixed.wasted_gb_s


def test_a_rarely_called_function_keeps_nothing_once_learned() -> None:
    """Idle times of 1 to 3 hours: no window is worth its memory; scale to zero."""
    rng = random.Random(3)
    times, t = [], 0.0
    for _ in range(20):
        times.append((t, 0))
        t += rng.uniform(3_600.0, 10_800.0)
    tiny = scenario(times, duration_s=t)
    learned = Engine(tiny, settings(), KeepAlivePolicy(600.0, learned=LEARNED)).run()
    fixed = Engine(tiny, settings(), KeepAlivePolicy(600.0)).run()
    assert learned.cold_starts == fixed.cold_starts == 20
    assert learned.wasted_gb_s < 0.5 * fixed.wasted_gb_s


def test_the_day_has_both_layouts_and_round_trips_the_records(tmp_path: Path) -> None:
    day = generate_day(200, 3_600.0, seed=5)
    calls = sum(len(f.arrivals_s) for f in day)
    assert calls > 1_000
    assert {f.kind for f in day} == {"hot", "busy", "timer", "bursty", "rare"}
    path = write_records(day, tmp_path / "records.csv")
    read = read_records(path)
    assert sum(len(f.arrivals_s) for f in read) == calls
    cluster = Cluster(1, 10_000, 10_000 * 256)
    for make in (per_minute_scenario, record_scenario):
        made = make(day, duration_s=3_600.0, cluster=cluster, timeout_s=60.0, seed=1)
        assert not isinstance(made.load, ClosedLoop)
        arrivals = sum(len(window) for window in made.load.windows(random.Random(1)))
        assert arrivals == calls


def test_the_tradeoff_reads_learned_points_against_the_fixed_curve() -> None:
    day = generate_day(300, 7_200.0, seed=5)
    tiny = record_scenario(
        day, duration_s=7_200.0, cluster=Cluster(1, 10_000, 10_000 * 256), timeout_s=60.0, seed=1
    )
    result = tradeoff(tiny, settings(), fixed_s=(60.0, 600.0, 3_600.0), worths_s=(300.0,))
    shares = [p.cold_start_share for p in result.fixed]
    memory = [p.idle_gb_s for p in result.fixed]
    assert shares == sorted(shares, reverse=True)
    assert memory == sorted(memory)
    assert result.fewer_cold_starts[0] is not None
    assert result.fewer_cold_starts[0] > 0.25
