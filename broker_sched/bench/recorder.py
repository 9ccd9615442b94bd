"""Everything one run measured, on one clock.

Completions, failures, periodic samples (containers live, backlog) and events (the
scheduler's timeline, Kafka rebalances, consumers added or removed) are all kept as
seconds since the run's start (``t0``, :func:`time.monotonic`), so a plot can put a
latency spike and the event that caused it on the same axis.

Aggregates cover only the measurement window ``[warmup_s, warmup_s + duration_s)`` and
come from HDR histograms; the per-interval series cover the whole run, warm-up included,
so plots show the cold start (their percentiles are exact nearest-rank values).
"""

from __future__ import annotations

import bisect
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from broker_sched.bench.histogram import LatencyHistogram
from broker_sched.events import Event

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

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
    tallies: list[tuple[float, str]] = field(default_factory=list)
    dropped_events: int = 0
    end_s: float | None = None

    def __post_init__(self) -> None:
        self.measured = LatencyHistogram()
        self.by_start: defaultdict[str, LatencyHistogram] = defaultdict(LatencyHistogram)
        self.queue_wait = LatencyHistogram()
        self.overhead = LatencyHistogram()
        """Latency less the activation's own run time: what scheduling added."""
        self.overhead_by_action: defaultdict[str, LatencyHistogram] = defaultdict(LatencyHistogram)
        self._cpu_start_s = time.process_time()
        self._wall_start_s = time.monotonic()
        self.cpu_share: float | None = None

    @property
    def window_end_s(self) -> float:
        return self.warmup_s + self.duration_s

    def now(self) -> float:
        return time.monotonic() - self.t0_s

    def relative(self, monotonic_s: float) -> float:
        return monotonic_s - self.t0_s

    def in_window(self, at_s: float) -> bool:
        return self.warmup_s <= at_s < self.window_end_s

    def record(
        self,
        latency_ms: float,
        *,
        start: str = "warm",
        queue_wait_ms: float | None = None,
        action: str = "",
        run_ms: float = 0.0,
    ) -> None:
        """One completed request, now; ``start`` is cold, warm, resumed or prewarm;
        ``queue_wait_ms`` is how long it waited in the broker, when known; ``run_ms``
        the activation's own run, which the overhead leaves out."""
        at_s = self.now()
        self.completions.append(Completion(at_s, latency_ms))
        if self.in_window(at_s):
            self.measured.record(latency_ms)
            self.by_start[start].record(latency_ms)
            self.starts[start] += 1
            overhead_ms = max(0.0, latency_ms - run_ms)
            self.overhead.record(overhead_ms)
            self.overhead_by_action[action].record(overhead_ms)
            if queue_wait_ms is not None:
                self.queue_wait.record(queue_wait_ms)

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

    def timeline_events(
        self,
        events: Iterable[Event],
        *,
        skip: frozenset[str] = frozenset(),
        tally: frozenset[str] = frozenset(),
        tally_only_above: int = 0,
    ) -> None:
        """Copy the scheduler's events onto this run's clock.

        Kinds in ``tally`` are counted per interval in :meth:`series`; when there are
        more than ``tally_only_above`` of them they are not listed one by one (hundreds
        of container evictions read better as a rate than as a list).
        """
        chosen = [event for event in events if event.kind not in skip]
        tallied = [event for event in chosen if event.kind in tally]
        self.tallies += [(self.relative(event.at_s), event.kind) for event in tallied]
        listed = (
            chosen
            if len(tallied) <= tally_only_above
            else [event for event in chosen if event.kind not in tally]
        )
        for event in listed:
            self.event(event.kind, at_s=event.at_s, action=event.action, **_plain(event.detail))
        self.events.sort(key=lambda entry: float(entry["t_s"]))

    def finish(self) -> None:
        """Stop the clock; also note how much of one core this process used meanwhile."""
        self.end_s = self.now()
        wall_s = time.monotonic() - self._wall_start_s
        if wall_s > 0:
            self.cpu_share = round((time.process_time() - self._cpu_start_s) / wall_s, 2)
        self.events.sort(key=lambda entry: float(entry["t_s"]))

    def in_range(self, start_s: float, end_s: float) -> list[Completion]:
        """Completions in ``[start_s, end_s)``; they are appended in time order."""
        first = bisect.bisect_left(self.completions, start_s, key=_at)
        last = bisect.bisect_left(self.completions, end_s, key=_at)
        return self.completions[first:last]

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
        for kind in sorted({kind for _, kind in self.tallies}):
            counts: list[float | None] = [0.0] * bins
            for at_s, tallied in self.tallies:
                index = int(at_s / self.interval_s)
                if tallied == kind and 0 <= index < bins:
                    counts[index] = (counts[index] or 0.0) + 1
            series[kind] = counts
        return series

    def summary(self) -> Summary:
        overhead = self.overhead.count > 0
        return Summary(
            completed=self.measured.count,
            tps=round(self.measured.count / self.duration_s, 1),
            latency_ms=self.measured.summary(),
            starts=dict(self.starts),
            errors=dict(self.errors),
            cpu_share=self.cpu_share,
            queue_wait_ms=self.queue_wait.summary() if self.queue_wait.count else None,
            overhead_ms=self.overhead.summary() if overhead else None,
            overhead_p99_by_action_ms=(
                {
                    action: round(histogram.percentile(99), 3)
                    for action, histogram in sorted(self.overhead_by_action.items())
                }
                if overhead
                else None
            ),
        )


@dataclass(frozen=True, slots=True)
class Summary:
    """The measurement window's aggregates: every typed result holds one, and
    ``results.json`` lists its fields inline (:func:`inline_summary`), so each result
    names them alike."""

    completed: int
    tps: float
    latency_ms: dict[str, float]
    """Percentiles (``p50`` … ``p99.9``), ``max`` and ``mean`` of the measured window."""
    starts: dict[str, int]
    """Completions by start kind: cold, warm, resumed, prewarm."""
    errors: dict[str, int]
    cpu_share: float | None
    """This process's CPU time ÷ the wall time from the recorder's creation to
    :meth:`Recorder.finish`, warm-up included (1.0 = one core); None until then."""
    queue_wait_ms: dict[str, float] | None
    """None when no request said how long it waited in the broker."""
    overhead_ms: dict[str, float] | None
    """Latency less the activation's own run time, as the caller gave it: what
    scheduling added; None when nothing completed in the window."""
    overhead_p99_by_action_ms: dict[str, float] | None

    def to_json(self) -> dict[str, Any]:
        """As in ``results.json``: the optional summaries only where measured."""
        optional = ("queue_wait_ms", "overhead_ms", "overhead_p99_by_action_ms")
        return {
            name: getattr(self, name)
            for name in self.__dataclass_fields__
            if not (name in optional and getattr(self, name) is None)
        }


def inline_summary(result: DataclassInstance) -> dict[str, Any]:
    """``result``'s fields as in ``results.json``, its :class:`Summary`'s spread where the
    summary sits: readers of the file find ``tps`` beside ``label``, not under a key."""
    document: dict[str, Any] = {}
    for item in fields(result):
        value = getattr(result, item.name)
        if isinstance(value, Summary):
            document.update(value.to_json())
        else:
            document[item.name] = value
    return document


def _at(completion: Completion) -> float:
    return completion.at_s


def _pct(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of one interval's few samples (exact, and far cheaper than
    a histogram per interval)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1))
    return round(ordered[rank], 3)


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
