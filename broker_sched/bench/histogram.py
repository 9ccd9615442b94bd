"""Latency percentiles from an HDR histogram.

Percentiles over tens of thousands of samples need either every sample (memory grows
with the run) or a histogram whose error is bounded; HdrHistogram keeps 3 significant
digits (0.1 %) over 1 µs to one hour in a fixed amount of memory. Values are recorded in
whole microseconds, so anything below 1 µs counts as 1 µs.
"""

from __future__ import annotations

from collections.abc import Iterable

from hdrh.histogram import HdrHistogram

PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p75", 75.0),
    ("p95", 95.0),
    ("p99", 99.0),
    ("p99.9", 99.9),
)
LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3


class LatencyHistogram:
    """Records latencies in milliseconds and answers percentiles in milliseconds."""

    def __init__(self) -> None:
        self._histogram = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    @classmethod
    def of(cls, latencies_ms: Iterable[float]) -> LatencyHistogram:
        histogram = cls()
        for latency_ms in latencies_ms:
            histogram.record(latency_ms)
        return histogram

    @property
    def count(self) -> int:
        return int(self._histogram.get_total_count())

    def record(self, latency_ms: float) -> None:
        """Record one latency; values beyond one hour are clamped to one hour."""
        micros = min(HIGHEST_US, max(LOWEST_US, round(latency_ms * 1000)))
        self._histogram.record_value(micros)

    def add(self, other: LatencyHistogram) -> None:
        self._histogram.add(other._histogram)

    def percentile(self, pct: float) -> float:
        """The latency at ``pct`` (0-100) in ms; 0.0 when nothing was recorded."""
        if self.count == 0:
            return 0.0
        return float(self._histogram.get_value_at_percentile(pct)) / 1000

    def max(self) -> float:
        return float(self._histogram.get_max_value()) / 1000 if self.count else 0.0

    def mean(self) -> float:
        return float(self._histogram.get_mean_value()) / 1000 if self.count else 0.0

    def summary(self) -> dict[str, float]:
        """p50, p75, p95, p99, p99.9, max and mean in ms, rounded to 0.001 ms."""
        values = {name: self.percentile(pct) for name, pct in PERCENTILES}
        values["max"] = self.max()
        values["mean"] = self.mean()
        return {name: round(value, 3) for name, value in values.items()}
