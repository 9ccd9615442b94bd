"""ArrivalRate and MovingAverage: deterministic, time passed in, bounded memory."""

from __future__ import annotations

import math

import pytest

from broker_sched.scheduler.rates import ArrivalRate, MovingAverage


class TestArrivalRate:
    def test_no_events_is_zero(self) -> None:
        assert ArrivalRate(1.0).rate_per_s(100.0) == 0.0

    def test_counts_events_in_window(self) -> None:
        rate = ArrivalRate(1.0)
        for t in (10.05, 10.25, 10.5, 10.95):
            rate.record(t)
        assert rate.rate_per_s(10.99) == 4.0

    def test_record_n_at_once(self) -> None:
        rate = ArrivalRate(1.0)
        rate.record(5.0, n=7)
        rate.record(5.5, n=3)
        assert rate.rate_per_s(5.6) == 10.0

    def test_rate_is_per_second_over_longer_window(self) -> None:
        rate = ArrivalRate(2.0)
        rate.record(1.1, n=10)
        assert rate.rate_per_s(1.2) == 5.0

    @pytest.mark.parametrize(
        ("now_s", "expected"),
        [
            (0.99, 3.0),  # all three inside
            (0.999, 3.0),  # 0.05 is 0.949 s old, still in the window
            (1.04, 2.0),  # 0.05 is 0.99 s old: left with its 0.1 s bucket (up to a bucket early)
            (1.65, 1.0),  # 0.55 has left
            (2.05, 0.0),  # 0.95 has left
            (50.0, 0.0),
        ],
    )
    def test_events_leave_the_window(self, now_s: float, expected: float) -> None:
        rate = ArrivalRate(1.0, buckets=10)
        for t in (0.05, 0.55, 0.95):
            rate.record(t)
        assert rate.rate_per_s(now_s) == expected

    def test_window_is_exact_to_one_bucket(self) -> None:
        rate = ArrivalRate(1.0, buckets=100)
        rate.record(3.0)
        assert rate.rate_per_s(3.985) == 1.0
        assert rate.rate_per_s(4.015) == 0.0

    def test_events_keep_counting_after_a_quiet_spell(self) -> None:
        rate = ArrivalRate(1.0)
        rate.record(1.0, n=5)
        assert rate.rate_per_s(30.0) == 0.0
        rate.record(30.1, n=2)
        assert rate.rate_per_s(30.2) == 2.0

    def test_time_going_backwards_is_counted_not_lost(self) -> None:
        rate = ArrivalRate(1.0)
        rate.record(10.5)
        rate.record(10.2)
        assert rate.rate_per_s(10.6) == 2.0

    def test_zero_events_is_a_no_op(self) -> None:
        rate = ArrivalRate(1.0)
        rate.record(1.0, n=0)
        assert rate.rate_per_s(1.0) == 0.0

    def test_high_load_is_exact_and_memory_bounded(self) -> None:
        rate = ArrivalRate(1.0, buckets=100)
        for i in range(50_000):
            rate.record(i / 20_000)  # 20,000 per second for 2.5 s
        assert rate.rate_per_s(49_999 / 20_000) == pytest.approx(20_000, rel=0.01)
        assert len(rate._counts) <= 100

    def test_negative_count_rejected(self) -> None:
        with pytest.raises(ValueError, match="negative"):
            ArrivalRate(1.0).record(1.0, n=-1)

    @pytest.mark.parametrize("window_s", [0.0, -1.0, math.nan, math.inf])
    def test_bad_window_rejected(self, window_s: float) -> None:
        with pytest.raises(ValueError, match="window_s"):
            ArrivalRate(window_s)

    def test_bad_bucket_count_rejected(self) -> None:
        with pytest.raises(ValueError, match="buckets"):
            ArrivalRate(1.0, buckets=0)


class TestMovingAverage:
    def test_none_until_first_sample(self) -> None:
        average = MovingAverage(10)
        assert average.value is None
        assert len(average) == 0

    def test_mean_of_samples(self) -> None:
        average = MovingAverage(10)
        for x in (0.01, 0.02, 0.03):
            average.add(x)
        assert average.value == pytest.approx(0.02)
        assert len(average) == 3

    def test_only_last_n_samples_count(self) -> None:
        average = MovingAverage(3)
        for x in (100.0, 1.0, 2.0, 3.0):
            average.add(x)
        assert average.value == 2.0
        assert len(average) == 3

    def test_zero_is_a_measurement_not_missing(self) -> None:
        average = MovingAverage(2)
        average.add(0.0)
        assert average.value == 0.0

    def test_sum_does_not_drift(self) -> None:
        average = MovingAverage(10)
        for _ in range(100_000):
            average.add(0.1)
        assert average.value == 0.1

    @pytest.mark.parametrize("sample", [math.nan, math.inf, -math.inf])
    def test_non_finite_sample_rejected(self, sample: float) -> None:
        average = MovingAverage(3)
        average.add(1.0)
        with pytest.raises(ValueError, match="finite"):
            average.add(sample)
        assert average.value == 1.0

    def test_bad_size_rejected(self) -> None:
        with pytest.raises(ValueError, match="size"):
            MovingAverage(0)
