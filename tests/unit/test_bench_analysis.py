"""Pauses, windows and the load drivers' timing rules."""

from __future__ import annotations

import asyncio
import time

import pytest

from broker_sched.bench.analysis import longest_gap, ratio, window_latency
from broker_sched.bench.load import Deadline, closed_loop, open_loop
from broker_sched.bench.recorder import Completion, Recorder


def test_the_longest_gap_may_start_before_the_window() -> None:
    times = [0.0, 0.1, 0.2, 1.5, 1.6]
    assert longest_gap(times, 0.25, 2.0) == pytest.approx((1.3, 0.2))


def test_a_stall_that_lasts_to_the_end_counts_to_the_end() -> None:
    assert longest_gap([0.0, 0.1], 0.5, 3.0) == pytest.approx((2.9, 0.1))


def test_no_completion_at_all_is_one_gap_over_the_window() -> None:
    assert longest_gap([], 1.0, 4.0) == pytest.approx((3.0, 1.0))


def test_window_latency_covers_only_its_window() -> None:
    completions = [Completion(at_s / 10, float(at_s)) for at_s in range(100)]
    window = window_latency(completions, 5.0, 6.0)
    assert window["completed"] == 10
    assert window["tps"] == pytest.approx(10.0)
    assert window["p50_ms"] == pytest.approx(54, abs=1)
    assert window["max_ms"] == pytest.approx(59, rel=1e-2)


def test_ratio_is_none_without_a_denominator() -> None:
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 2.0) is None
    assert ratio(1.0, 3.0) == 0.333


def test_the_recorder_measures_only_its_window_but_plots_everything() -> None:
    recorder = Recorder(warmup_s=0.0, duration_s=60.0, interval_s=0.5)
    recorder.record(5.0, start="cold")
    recorder.record(1.0)
    recorder.warmup_s = 60.0  # everything from now on is warm-up
    recorder.record(9.0)
    recorder.finish()
    assert recorder.measured.count == 2
    assert dict(recorder.starts) == {"cold": 1, "warm": 1}
    series = recorder.series()
    assert series["tps"][0] == pytest.approx(6.0)


async def test_open_loop_keeps_its_schedule_when_requests_stall() -> None:
    """Coordinated omission: a request that stalls delays no later request's intended time."""
    intended: list[float] = []
    start_s = time.monotonic() + 0.02

    async def request(intended_s: float) -> None:
        intended.append(intended_s)
        if len(intended) == 1:
            time.sleep(0.1)  # noqa: ASYNC251 - stall the whole event loop on purpose

    await open_loop(100.0, request, start_s=start_s, until=lambda: start_s + 0.3, grace_s=1.0)
    assert len(intended) == 30
    assert intended == pytest.approx([start_s + n / 100 for n in range(30)])


async def test_closed_loop_users_wait_for_their_previous_request() -> None:
    running: set[int] = set()
    overlaps = 0
    calls = 0

    async def request(user: int) -> None:
        nonlocal overlaps, calls
        overlaps += user in running
        running.add(user)
        calls += 1
        await asyncio.sleep(0.01)
        running.discard(user)

    deadline = Deadline(time.monotonic() + 0.1)
    cancelled = await closed_loop(3, request, until=deadline, grace_s=1.0)
    assert overlaps == 0
    assert cancelled == 0
    assert 3 <= calls <= 3 * 11


async def test_requests_past_the_grace_are_cancelled_and_counted() -> None:
    async def request(user: int) -> None:
        await asyncio.sleep(10)

    deadline = Deadline(time.monotonic() + 0.05)
    assert await closed_loop(2, request, until=deadline, grace_s=0.05) == 2
