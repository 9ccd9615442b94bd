"""Traces in the column layout of the public Azure Functions 2019 trace.

Two CSV files describe a day: per function, invocations per minute
(``HashOwner,HashApp,HashFunction,Trigger,1,2,…``: 1,440 minute columns in the real
trace, any number here), and the execution time distribution
(``HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,
percentile_Average_0,_1,_25,_50,_75,_99,_100``, in milliseconds). Functions are joined
on the three hashes; a function without a durations row cannot be simulated and is
counted in :attr:`Trace.unmatched` instead.

A run's time is drawn from the percentiles by inverse transform: a uniform quantile,
interpolated linearly between the recorded percentiles. The published percentiles are
of 30-second averages rather than of single runs, so the tails are somewhat narrower
than the truth — the best the trace allows.

Each minute's count is spread over the minute by :class:`TraceArrivals`: "uniform"
(exactly that many, at uniformly random times) or "poisson" (a Poisson process with
that minute's mean rate).
"""

from __future__ import annotations

import bisect
import csv
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from broker_sched.errors import ConfigError
from broker_sched.simulator.model import Cluster, Scenario, SimAction

KEY_COLUMNS = ("HashOwner", "HashApp", "HashFunction")
INVOCATION_COLUMNS = (*KEY_COLUMNS, "Trigger")
PERCENTILES = (0, 1, 25, 50, 75, 99, 100)
DURATION_COLUMNS = (
    *KEY_COLUMNS,
    "Average",
    "Count",
    "Minimum",
    "Maximum",
    *(f"percentile_Average_{p}" for p in PERCENTILES),
)
MINUTE_S = 60.0

Spread = Literal["uniform", "poisson"]


@dataclass(frozen=True, slots=True)
class PercentileRunTime:
    """A run-time distribution given by percentiles: ``(quantile 0..1, ms)``, ascending."""

    points: tuple[tuple[float, float], ...]

    def draw(self, rng: random.Random) -> float:
        u = rng.random()
        quantiles = [q for q, _ in self.points]
        i = min(max(1, bisect.bisect_right(quantiles, u)), len(self.points) - 1)
        (q0, ms0), (q1, ms1) = self.points[i - 1], self.points[i]
        return ms0 if q1 == q0 else ms0 + (ms1 - ms0) * (u - q0) / (q1 - q0)

    @property
    def median_ms(self) -> float:
        return dict(self.points)[0.5]


@dataclass(frozen=True, slots=True)
class TraceFunction:
    owner: str
    app: str
    function: str
    trigger: str
    per_minute: tuple[int, ...]
    run_ms: PercentileRunTime
    average_ms: float

    @property
    def invocations(self) -> int:
        return sum(self.per_minute)


@dataclass(frozen=True, slots=True)
class Trace:
    functions: tuple[TraceFunction, ...]
    minutes: int
    unmatched: int = 0
    """Functions with invocations but no durations row (left out)."""

    @property
    def invocations(self) -> int:
        return sum(function.invocations for function in self.functions)

    def first_minutes(self, minutes: int) -> Trace:
        """The trace cut after ``minutes`` (a day of the real trace is 1,440)."""
        functions = tuple(replace(f, per_minute=f.per_minute[:minutes]) for f in self.functions)
        return Trace(functions, min(self.minutes, minutes), self.unmatched)


def durations_path_for(invocations: Path) -> Path:
    """The durations file beside an invocations file, named as the Azure trace names it."""
    name = invocations.name.replace("invocations_per_function_md", "function_durations_percentiles")
    return invocations.with_name(name)


def read_trace(invocations: Path, durations: Path | None = None) -> Trace:
    """Read and join both files; raises :class:`ConfigError` naming a missing column."""
    durations = durations or durations_path_for(invocations)
    if durations == invocations:
        raise ConfigError(
            f"{invocations}: name the durations file (not named like the Azure trace's)"
        )
    distributions = dict(_durations(durations))
    functions: list[TraceFunction] = []
    unmatched = 0
    minutes = 0
    for row, counts in _invocations(invocations):
        minutes = max(minutes, len(counts))
        key = (row["HashOwner"], row["HashApp"], row["HashFunction"])
        found = distributions.get(key)
        if found is None:
            unmatched += any(counts)
            continue
        run_ms, average_ms = found
        functions.append(TraceFunction(*key, row["Trigger"], counts, run_ms, average_ms))
    return Trace(tuple(functions), minutes, unmatched)


def _rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[list[str], dict[str, str]]]:
    try:
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            header = list(reader.fieldnames or [])
            if missing := [c for c in columns if c not in header]:
                raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}")
            for row in reader:
                yield header, row
    except FileNotFoundError as exc:
        raise ConfigError(f"trace file not found: {path}") from exc


def _invocations(path: Path) -> Iterator[tuple[dict[str, str], tuple[int, ...]]]:
    minute_columns: list[str] | None = None
    for header, row in _rows(path, INVOCATION_COLUMNS):
        if minute_columns is None:
            minute_columns = sorted((c for c in header if c.isdigit()), key=int)
        try:
            counts = tuple(int(row[c] or 0) for c in minute_columns)
        except ValueError as exc:
            raise ConfigError(f"{path}: a minute count is not a whole number: {exc}") from exc
        yield row, counts


def _durations(
    path: Path,
) -> Iterator[tuple[tuple[str, str, str], tuple[PercentileRunTime, float]]]:
    for _, row in _rows(path, DURATION_COLUMNS):
        try:
            values = [max(0.0, float(row[f"percentile_Average_{p}"])) for p in PERCENTILES]
            average_ms = float(row["Average"])
        except ValueError as exc:
            raise ConfigError(f"{path}: a duration is not a number: {exc}") from exc
        for i in range(1, len(values)):
            values[i] = max(values[i], values[i - 1])
        points = tuple((p / 100, ms) for p, ms in zip(PERCENTILES, values, strict=True))
        yield (
            (row["HashOwner"], row["HashApp"], row["HashFunction"]),
            (
                PercentileRunTime(points),
                average_ms,
            ),
        )


@dataclass(frozen=True, slots=True)
class TraceArrivals:
    """Each function's per-minute counts, spread over their minute."""

    per_minute: tuple[tuple[int, ...], ...]
    """Per function (by action index), invocations per minute."""
    minutes: int
    spread: Spread = "uniform"

    @property
    def duration_s(self) -> float:
        return self.minutes * MINUTE_S

    @property
    def window_s(self) -> float:
        return MINUTE_S

    def windows(self, rng: random.Random) -> Iterator[list[tuple[float, int]]]:
        for minute in range(self.minutes):
            start_s = minute * MINUTE_S
            arrivals: list[tuple[float, int]] = []
            for index, counts in enumerate(self.per_minute):
                count = counts[minute] if minute < len(counts) else 0
                if count:
                    arrivals += [(start_s + t, index) for t in self._times(count, rng)]
            arrivals.sort()
            yield arrivals

    def _times(self, count: int, rng: random.Random) -> list[float]:
        if self.spread == "uniform":
            return [rng.random() * MINUTE_S for _ in range(count)]
        times: list[float] = []
        t = rng.expovariate(count / MINUTE_S)
        while t < MINUTE_S:
            times.append(t)
            t += rng.expovariate(count / MINUTE_S)
        return times


def from_trace(
    trace: Trace,
    *,
    cluster: Cluster,
    timeout_s: float,
    seed: int,
    memory_mb: int = 256,
    limit: int = 50,
    spread: Spread = "uniform",
    name: str = "trace",
) -> Scenario:
    """A scenario of ``trace``: one action per function (``guest/f0000``, …), all with
    ``memory_mb``, concurrency 1 and ``limit`` containers at most."""
    actions = tuple(
        SimAction(f"guest/f{i:04d}", function.run_ms, memory_mb, 1, limit)
        for i, function in enumerate(trace.functions)
    )
    arrivals = TraceArrivals(
        tuple(function.per_minute for function in trace.functions), trace.minutes, spread
    )
    return Scenario(name, actions, cluster, arrivals, timeout_s, seed)
