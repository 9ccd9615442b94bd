"""Keep-alive and pre-warm windows learned from an action's idle-time histogram."""

from __future__ import annotations

import random

import pytest

from broker_sched.config import KeepAliveSettings
from broker_sched.scheduler.idle_windows import (
    BinShape,
    IdleHistogram,
    fixed_windows,
    keeps_container,
    learned_windows,
    prewarm_due_s,
)

SETTINGS = KeepAliveSettings(policy="learned")
FIXED_S = 10.0


def histogram_of(
    idle_times_s: list[float], settings: KeepAliveSettings = SETTINGS
) -> IdleHistogram:
    histogram = IdleHistogram(BinShape.of(settings))
    for idle_s in idle_times_s:
        histogram.add(idle_s)
    return histogram


def test_bins_are_geometric_cover_the_range_and_stay_few() -> None:
    shape = BinShape.of(SETTINGS)
    assert shape.range_s >= SETTINGS.range_s
    assert shape.bins <= 50  # 1 s to 4 h in a few dozen counters
    assert shape.index(0.0) == 0
    assert shape.index(0.999) == 0
    assert shape.index(1.0) == 1
    assert shape.index(SETTINGS.range_s * 2) is None
    for k in range(1, shape.bins):
        assert shape.index(shape.lower_s(k)) == k
        assert shape.index(shape.upper_s(k) * 0.999999) == k


def test_memory_is_bounded_by_the_settings_not_the_calls() -> None:
    histogram = histogram_of([random.Random(1).uniform(0, 50_000) for _ in range(10_000)])
    assert len(histogram.counts) == BinShape.of(SETTINGS).bins
    assert histogram.samples == 10_000


def test_few_samples_fall_back_to_the_fixed_keep_alive() -> None:
    windows = learned_windows(histogram_of([300.0] * 9), SETTINGS, FIXED_S)
    assert windows == fixed_windows(FIXED_S, windows.reason)
    assert "fixed keep-alive" in windows.reason


def test_a_timer_is_pre_warmed_just_before_its_period_and_kept_just_past_it() -> None:
    """A 5-minute timer: no container for most of the gap, one around the call."""
    windows = learned_windows(histogram_of([300.0] * 50), SETTINGS, FIXED_S)
    assert 0.7 * 300 < windows.prewarm_s < 300
    assert 300 < windows.until_s < 1.5 * 300
    assert not keeps_container(windows, 60.0)
    assert keeps_container(windows, 299.0)
    assert not keeps_container(windows, 500.0)
    assert prewarm_due_s(windows) == windows.prewarm_s
    assert "histogram" in windows.reason


def test_short_idle_times_keep_alive_from_the_start_to_the_tail() -> None:
    rng = random.Random(2)
    windows = learned_windows(
        histogram_of([rng.uniform(0.0, 20.0) for _ in range(200)]), SETTINGS, FIXED_S
    )
    assert windows.prewarm_s == 0.0
    assert prewarm_due_s(windows) is None
    assert 19.0 < windows.until_s < 20.0 * 1.25 * 1.1 + 1e-9
    assert keeps_container(windows, 0.0)


def test_the_quantiles_ignore_rare_outliers() -> None:
    """One idle time in a hundred far out does not stretch the keep-alive to it."""
    idle_s = [60.0] * 99 + [3_000.0]
    windows = learned_windows(histogram_of(idle_s), SETTINGS, FIXED_S)
    assert windows.until_s < 100.0


def test_idle_times_beyond_the_range_are_forecast_by_their_mean() -> None:
    idle_s = [20_000.0] * 8 + [22_000.0] * 4
    windows = learned_windows(histogram_of(idle_s), SETTINGS, FIXED_S)
    assert 20_000 * 0.8 < windows.prewarm_s < 22_000
    assert windows.until_s > 20_000
    assert "beyond" in windows.reason


@pytest.mark.parametrize("idle_s", [-1.0, 0.0])
def test_a_call_while_busy_or_a_clock_step_back_counts_as_no_idle_time(idle_s: float) -> None:
    histogram = histogram_of([idle_s])
    assert histogram.counts[0] == 1
