"""Everything one run measured, on one clock.

Completions, failures, periodic samples (containers live, backlog) and events (the
scheduler's timeline, Kafka rebalances, consumers added or removed) are all kept as
seconds since the run's start (``t0``, :func:`time.monotonic`), so a plot can put a
latency spike and the event that caused it on the same axis.

Aggregates cover only the measurement window ``[warmup_s, warmup_s + duration_s)``; the
per-interval series cover the whole run, warm-up included, so plots show the cold start.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from broker_sched.bench.histogram import LatencyHistogram
from broker_sched.events import Event

MAX_EVENTS = 5_000
"""Events kept per run; the count of the rest is reported, so a long run stays readable."""


@dataclass(frozen=True, slots=True)
class Completion:
    at_s: float
    latency_ms: float


@dataclass
class Recorder:
    warmup_s: float
    duration_s: float
    interval_s: float
    t0_s: float = field(default_factory=time.monotonic)
    completions: list[Completion] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    starts: Counter[str] = field(default_factory=Counter)
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    dropped_events: int = 0
    end_s: float | None = None

    def __post_init__(self) -> None:
        self.measured = LatencyHistogram()
        self.by_start: defaultdict[str, LatencyHistogram] = defaultdict(LatencyHistogram)

    @property
    def window_end_s(self) -> float:
        return self.warmup_s + self.duration_s

    def now(self) -> float:
        return time.monotonic() - self.t0_s

    def relative(self, monotonic_s: float) -> float:
        return monotonic_s - self.t0_s

    def in_window(self, at_s: float) -> bool:
        return self.warmup_s <= at_s < self.window_end_s

    def record(self, latency_ms: float, *, start: str = "warm") -> None:
        """One completed request, now; ``start`` is cold, warm, resumed or prewarm."""
        at_s = self.now()
        self.completions.append(Completion(at_s, latency_ms))
        if self.in_window(at_s):
            self.measured.record(latency_ms)
            self.by_start[start].record(latency_ms)
            self.starts[start] += 1

    def fail(self, kind: str) -> None:
        if self.in_window(self.now()):
            self.errors[kind] += 1

    def sample(self, **values: float) -> None:
        self.samples.append((self.now(), values))

    def event(
        self, kind: str, *, at_s: float | None = None, action: str = "", **detail: Any
    ) -> None:
        """An event at monotonic time ``at_s`` (default: now)."""
        when = self.now() if at_s is None else self.relative(at_s)
        if len(self.events) >= MAX_EVENTS:
            self.dropped_events += 1
            return
        entry: dict[str, Any] = {"t_s": round(when, 4), "kind": kind}
        if action:
            entry["action"] = action
        if detail:
            entry["detail"] = detail
        self.events.append(entry)

    def timeline_events(self, events: Iterable[Event], skip: frozenset[str] = frozenset()) -> None:
        for event in events:
            if event.kind not in skip:
                self.event(event.kind, at_s=event.at_s, action=event.action, **_plain(event.detail))
        self.events.sort(key=lambda entry: float(entry["t_s"]))

    def finish(self) -> None:
        self.end_s = self.now()

    def in_range(self, start_s: float, end_s: float) -> list[Completion]:
        return [c for c in self.completions if start_s <= c.at_s < end_s]

    def series(self) -> dict[str, list[float | None]]:
        """Per interval: start time, throughput, p50/p99 of what completed, last samples."""
        end_s = self.end_s if self.end_s is not None else self.now()
        bins = max(1, int(end_s / self.interval_s + 0.999))
        latencies: list[list[float]] = [[] for _ in range(bins)]
        for completion in self.completions:
            index = int(completion.at_s / self.interval_s)
            if 0 <= index < bins:
                latencies[index].append(completion.latency_ms)
        sampled: list[dict[str, float]] = [{} for _ in range(bins)]
        for at_s, values in self.samples:
            index = int(at_s / self.interval_s)
            if 0 <= index < bins:
                sampled[index] = values
        keys = sorted({key for _, values in self.samples for key in values})
        series: dict[str, list[float | None]] = {
            "t_s": [round(i * self.interval_s, 3) for i in range(bins)],
            "tps": [round(len(values) / self.interval_s, 1) for values in latencies],
            "p50_ms": [_pct(values, 50) for values in latencies],
            "p99_ms": [_pct(values, 99) for values in latencies],
        }
        for key in keys:
            series[key] = [values.get(key) for values in sampled]
        return series

    def summary(self) -> dict[str, Any]:
        completed = self.measured.count
        return {
            "completed": completed,
            "tps": round(completed / self.duration_s, 1),
            "latency_ms": self.measured.summary(),
            "starts": dict(self.starts),
            "errors": dict(self.errors),
        }


def _pct(values: list[float], pct: float) -> float | None:
    return round(LatencyHistogram.of(values).percentile(pct), 3) if values else None


def _plain(detail: dict[str, Any]) -> dict[str, Any]:
    """Event details as JSON-friendly values (numbers rounded, anything else as text)."""
    plain: dict[str, Any] = {}
    for key, value in detail.items():
        if isinstance(value, float):
            plain[key] = round(value, 3)
        elif isinstance(value, str | int | bool) or value is None:
            plain[key] = value
        else:
            plain[key] = str(value)
    return plain
