"""Latency percentiles from the HDR histogram: exact enough, and sane when empty."""

from __future__ import annotations

import sys

import pytest

from broker_sched.bench.histogram import LatencyHistogram


def test_percentiles_of_a_uniform_spread_are_within_a_tenth_of_a_percent() -> None:
    histogram = LatencyHistogram.of(float(ms) for ms in range(1, 1001))
    summary = histogram.summary()
    assert summary["p50"] == pytest.approx(500, rel=1e-3)
    assert summary["p75"] == pytest.approx(750, rel=1e-3)
    assert summary["p95"] == pytest.approx(950, rel=1e-3)
    assert summary["p99"] == pytest.approx(990, rel=1e-3)
    assert summary["p99.9"] == pytest.approx(999, rel=1e-3)
    assert summary["max"] == pytest.approx(1000, rel=1e-3)
    assert summary["mean"] == pytest.approx(500.5, rel=1e-3)
    assert histogram.count == 1000


def test_one_outlier_shows_in_the_tail_only() -> None:
    histogram = LatencyHistogram.of([2.0] * 999 + [5_000.0])
    assert histogram.percentile(50) == pytest.approx(2.0, rel=1e-3)
    assert histogram.percentile(99) == pytest.approx(2.0, rel=1e-3)
    assert histogram.max() == pytest.approx(5_000.0, rel=1e-3)


def test_sub_millisecond_values_keep_microsecond_resolution() -> None:
    assert LatencyHistogram.of([0.25]).percentile(50) == pytest.approx(0.25, rel=1e-2)


def test_an_empty_histogram_reports_zeros() -> None:
    summary = LatencyHistogram().summary()
    assert set(summary) == {"p50", "p75", "p95", "p99", "p99.9", "max", "mean"}
    assert all(value == 0.0 for value in summary.values())


def test_histograms_add_up() -> None:
    low, high = LatencyHistogram.of([1.0] * 50), LatencyHistogram.of([100.0] * 50)
    low.add(high)
    assert low.count == 100
    assert low.percentile(25) == pytest.approx(1.0, rel=1e-3)
    assert low.percentile(75) == pytest.approx(100.0, rel=1e-3)


def test_absurd_values_are_clamped_not_rejected() -> None:
    histogram = LatencyHistogram.of([-5.0, 10 * 3600 * 1000.0])
    assert histogram.count == 2
    assert histogram.max() == pytest.approx(3600 * 1000.0, rel=1e-3)


@pytest.mark.parametrize(
    "command", [["bench", "mixed"], ["compare", "mixed", "--transports", "memory"], ["simulate"]]
)
def test_without_the_bench_extra_the_command_names_it_in_one_line(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from broker_sched.cli import main

    monkeypatch.setitem(sys.modules, "hdrh", None)

    assert main(command) == 2
    assert capsys.readouterr().err == (
        f"broker-sched: {command[0]} needs its libraries: pip install 'broker-sched[bench]'\n"
    )
