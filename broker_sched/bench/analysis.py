"""Pure measurements over completion times: consumption pauses and latency per window.

A *pause* is the longest time with no completion at all. Under a steady open-loop load
the normal gap is about ``1 / rate``; a rebalance that revokes every partition shows up
as a gap of seconds. A stall that is still going on at the end of the window counts up
to the window's end, so a consumer group that never recovered is not reported as fine.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from broker_sched.bench.histogram import LatencyHistogram
from broker_sched.bench.recorder import Completion


def longest_gap(times_s: Sequence[float], start_s: float, end_s: float) -> tuple[float, float]:
    """``(gap_s, gap_start_s)``: the longest stretch in ``[start_s, end_s]`` without a
    completion; it may begin at the last completion before ``start_s``. ``times_s`` sorted."""
    first = bisect.bisect_right(times_s, start_s)
    previous_s = times_s[first - 1] if first > 0 else start_s
    gap_s, gap_start_s = 0.0, previous_s
    for at_s in [*times_s[first : bisect.bisect_right(times_s, end_s)], end_s]:
        if at_s - previous_s > gap_s:
            gap_s, gap_start_s = at_s - previous_s, previous_s
        previous_s = at_s
    return gap_s, gap_start_s


def window_latency(
    completions: Sequence[Completion], start_s: float, end_s: float
) -> dict[str, float]:
    """Count, throughput and latency percentiles of what completed in ``[start_s, end_s)``."""
    latencies = [c.latency_ms for c in completions if start_s <= c.at_s < end_s]
    summary = LatencyHistogram.of(latencies).summary()
    span_s = max(end_s - start_s, 1e-9)
    return {
        "completed": len(latencies),
        "tps": round(len(latencies) / span_s, 1),
        "p50_ms": summary["p50"],
        "p99_ms": summary["p99"],
        "max_ms": summary["max"],
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator`` rounded to 3 places; None when either is missing or 0."""
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 3)
