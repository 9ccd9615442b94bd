"""The chaos accounting, to the activation, on hand-made runs."""

from __future__ import annotations

import math

import pytest

from broker_sched.bench.chaos_accounting import (
    FAULT_SETTLES_S,
    Call,
    Seen,
    account,
    percentile,
    recovery_s,
)


def test_percentile_is_nearest_rank() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 99)


def test_every_call_is_accounted_once() -> None:
    calls = [
        Call(seq=0, sent_s=0.0, blocking=True, accepted=True, activation_id="a0"),
        Call(seq=1, sent_s=0.1, blocking=False, accepted=True, activation_id="a1"),
        Call(seq=2, sent_s=0.2, blocking=True, accepted=False, error="503", answered_s=0.5),
        # refused to the client, yet published: its result proves it was accepted
        Call(seq=3, sent_s=0.3, blocking=True, accepted=False, error="connection reset"),
        Call(seq=4, sent_s=0.4, blocking=False, accepted=True, activation_id="a4"),
        Call(seq=5, sent_s=0.5, blocking=False, accepted=True, activation_id="a5"),
        Call(seq=6, sent_s=0.6, blocking=False, accepted=True, activation_id="a6"),
    ]
    seen = [
        Seen("a0", "success", 0.05, seq=0),
        Seen("a0", "success", 0.9, seq=0),  # a rerun
        Seen("a1", "system_error", 0.3, error="container crashed"),
        Seen("a3", "success", 0.4, seq=3),
    ]
    # a5's result was missed by the observer but its record is there; a4 and a6 are lost
    recorded = {"a0", "a1", "a5"}
    result = account(calls, seen, recorded, fault_s=0.1)
    assert result.sent == 7
    assert result.accepted == 6
    assert result.completed == 3
    assert result.failed == {"system_error: container crashed": 1}
    assert result.refused == {"503": 1}
    assert result.refused_within_s is None  # seq 2 was sent before the fault settled
    assert result.lost == 2
    assert result.lost_seqs == [4, 6]
    assert result.duplicates == 1
    assert result.unrecorded == 1  # a3 ran and its result came, but it has no record
    assert result.steady_p99_s is None or result.steady_p99_s > 0


def test_recovery_is_when_p99_stays_within_bound() -> None:
    steady = 0.01
    fast = [(t / 10, 0.01) for t in range(0, 20)]  # before the fault at 2.0
    slow = [(2.0 + t / 10, 1.0) for t in range(0, 10)]  # 2.0 .. 2.9 slow
    back = [(3.0 + t / 10, 0.012) for t in range(0, 20)]
    assert recovery_s([*fast, *slow, *back], fault_s=2.0, steady_p99_s=steady) == 1.0
    undisturbed = [(2.0 + t / 10, 0.012) for t in range(0, 20)]
    assert recovery_s([*fast, *undisturbed], fault_s=2.0, steady_p99_s=steady) == 0.0
    assert recovery_s([*fast, *slow], fault_s=2.0, steady_p99_s=steady) is None
    lost = [(3.2, math.inf)]
    assert recovery_s([*fast, *slow, *back, *lost], fault_s=2.0, steady_p99_s=steady) == 1.5


def test_recovery_after_a_run_with_no_fault_is_zero() -> None:
    calls = [
        Call(seq=i, sent_s=i / 10, blocking=True, accepted=True, activation_id=f"a{i}")
        for i in range(40)
    ]
    seen = [Seen(f"a{i}", "success", i / 10 + 0.02, seq=i) for i in range(40)]
    result = account(calls, seen, {f"a{i}" for i in range(40)}, fault_s=2.0, warmup_s=0.5)
    assert result.lost == 0
    assert result.completed == 40
    assert result.steady_p99_s == pytest.approx(0.02)
    assert result.recovery_s == 0.0
    assert result.p99_by_second == pytest.approx([0.02] * 4)


def test_a_refusal_is_timed_only_for_calls_sent_once_the_fault_settled() -> None:
    """A publish handed over as the broker died waits out its deadline: not the outage's
    answer time."""
    calls = [
        Call(seq=0, sent_s=1.0, blocking=True, accepted=False, error="503", answered_s=11.0),
        Call(
            seq=1,
            sent_s=1.0 + FAULT_SETTLES_S,
            blocking=True,
            accepted=False,
            error="503",
            answered_s=1.6,
        ),
    ]
    result = account(calls, [], set(), fault_s=1.0)
    assert result.refused == {"503": 2}
    assert result.refused_within_s == pytest.approx(0.1)
