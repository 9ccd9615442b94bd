"""A day of 10,000 synthetic functions in both Azure Functions trace layouts.

The keep-alive trade-off needs what the 200-function sample does not have: a whole day
(idle gaps of hours must fit in it) and many functions whose invocation patterns differ
by orders of magnitude. Shaped after "Serverless in the Wild" (ATC'20) — most functions
are called less than once a minute, a few take most calls, a large share are timers —
with every function's calls drawn as exact times, then written in either layout:

- **2019** (``invocations_per_function_md``): per function, counts per minute — the
  simulator spreads each minute's count over the minute again (:mod:`.trace`);
- **2021** (``AzureFunctionsInvocationTrace``): one record per invocation,
  ``app,func,end_timestamp,duration`` in seconds since the trace's start — exact
  arrivals (end minus duration) and per-run durations (:func:`read_records`).

Kinds and their share of the functions:

- ``hot`` (1 %): a Poisson rate of 0.02-0.5 per second with a daily swell;
- ``busy`` (14 %): 0.05-2 per minute, Poisson;
- ``timer`` (20 %): every 1, 2, 5, 10, 15, 30 or 60 minutes, ±1 s jitter;
- ``bursty`` (15 %): on/off — sessions a Poisson 1-12 per day apart, each 3-40 calls
  0.5-5 s apart (a user's clicks, a batch of messages);
- ``rare`` (50 %): a Poisson 1-24 per day.

Run times are lognormal per function (medians 5 ms to 2 s). Seeded: the same seed
gives the same day.
"""

from __future__ import annotations

import bisect
import csv
import math
import random
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from broker_sched.errors import ConfigError
from broker_sched.simulator.model import Cluster, Scenario, SimAction
from broker_sched.simulator.trace import MINUTE_S, TraceArrivals

DAY_FUNCTIONS = 10_000
DAY_S = 86_400.0
DAY_SEED = 2021
RECORD_COLUMNS = ("app", "func", "end_timestamp", "duration")

_KINDS = (("hot", 0.01), ("busy", 0.14), ("timer", 0.20), ("bursty", 0.15), ("rare", 0.50))
_TIMER_PERIODS_MIN = (1, 2, 5, 10, 15, 30, 60)


@dataclass(frozen=True, slots=True)
class LognormalRunTime:
    median_ms: float
    sigma: float

    def draw(self, rng: random.Random) -> float:
        return self.median_ms * math.exp(self.sigma * rng.gauss(0.0, 1.0))


@dataclass(frozen=True, slots=True)
class EmpiricalRunTime:
    """A function's recorded run times (2021 layout): each draw one of them."""

    ms: tuple[float, ...]

    def draw(self, rng: random.Random) -> float:
        return self.ms[int(rng.random() * len(self.ms))]


@dataclass(frozen=True, slots=True)
class DayFunction:
    name: str
    kind: str
    arrivals_s: array[float]
    """Sorted arrival times in seconds from the day's start."""
    run_ms: LognormalRunTime | EmpiricalRunTime


def generate_day(
    functions: int = DAY_FUNCTIONS, duration_s: float = DAY_S, seed: int = DAY_SEED
) -> list[DayFunction]:
    rng = random.Random(seed)
    kinds = [kind for kind, share in _KINDS for _ in range(round(share * functions))]
    kinds = (kinds + ["rare"] * functions)[:functions]
    rng.shuffle(kinds)
    day: list[DayFunction] = []
    for i, kind in enumerate(kinds):
        low_ms, high_ms = (5.0, 200.0) if kind == "hot" else (5.0, 2000.0)
        run_ms = LognormalRunTime(
            math.exp(rng.uniform(math.log(low_ms), math.log(high_ms))), rng.uniform(0.2, 1.0)
        )
        times = array("d", sorted(_arrivals(kind, duration_s, rng)))
        day.append(DayFunction(f"f{i:05d}", kind, times, run_ms))
    return day


def _arrivals(kind: str, duration_s: float, rng: random.Random) -> Iterator[float]:
    if kind == "timer":
        period_s = 60.0 * rng.choice(_TIMER_PERIODS_MIN)
        t = rng.uniform(0.0, period_s)
        while t < duration_s:
            yield max(0.0, t + rng.uniform(-1.0, 1.0))
            t += period_s
        return
    if kind == "bursty":
        gap_s = DAY_S / math.exp(rng.uniform(0.0, math.log(12.0)))
        t = rng.expovariate(1 / gap_s)
        while t < duration_s:
            spacing_s = rng.uniform(0.5, 5.0)
            for call in range(rng.randint(3, 40)):
                if t + call * spacing_s < duration_s:
                    yield t + call * spacing_s
            t += rng.expovariate(1 / gap_s)
        return
    if kind == "hot":
        per_s = math.exp(rng.uniform(math.log(0.02), math.log(0.5)))
        swell = rng.uniform(0.0, 2 * math.pi)
        peak = per_s * 1.5
        t = 0.0
        while True:  # thinning: a Poisson process at the swelling rate
            t += rng.expovariate(peak)
            if t >= duration_s:
                return
            rate = per_s * (1 + 0.5 * math.sin(swell + 2 * math.pi * t / DAY_S))
            if rng.random() * peak < rate:
                yield t
    if kind == "busy":
        per_s = math.exp(rng.uniform(math.log(0.05), math.log(2.0))) / MINUTE_S
    else:
        per_s = math.exp(rng.uniform(0.0, math.log(24.0))) / DAY_S
    t = rng.expovariate(per_s)
    while t < duration_s:
        yield t
        t += rng.expovariate(per_s)


@dataclass(frozen=True, slots=True)
class RecordArrivals:
    """Exact arrival times (the 2021 layout), handed out a minute at a time."""

    times_s: array[float]
    indexes: array[int]
    """Sorted by time; ``indexes[i]`` is the action of ``times_s[i]``."""
    duration_s: float
    window_s: float = MINUTE_S

    def windows(self, rng: random.Random) -> Iterator[list[tuple[float, int]]]:
        times, indexes = self.times_s, self.indexes
        start = 0
        for window in range(math.ceil(self.duration_s / self.window_s)):
            end = bisect.bisect_left(times, (window + 1) * self.window_s, lo=start)
            yield list(zip(times[start:end], indexes[start:end], strict=True))
            start = end


def _actions(day: list[DayFunction], memory_mb: int, limit: int) -> tuple[SimAction, ...]:
    return tuple(SimAction(f"guest/{f.name}", f.run_ms, memory_mb, 1, limit) for f in day)


def per_minute_scenario(
    day: list[DayFunction],
    *,
    duration_s: float,
    cluster: Cluster,
    timeout_s: float,
    seed: int,
    memory_mb: int = 256,
    limit: int = 50,
) -> Scenario:
    """The 2019 layout: each function's calls counted per minute, spread again."""
    minutes = math.ceil(duration_s / MINUTE_S)
    per_minute: list[tuple[int, ...]] = []
    for function in day:
        counts = [0] * minutes
        for t in function.arrivals_s:
            counts[min(int(t // MINUTE_S), minutes - 1)] += 1
        per_minute.append(tuple(counts))
    arrivals = TraceArrivals(tuple(per_minute), minutes)
    return Scenario("day-2019", _actions(day, memory_mb, limit), cluster, arrivals, timeout_s, seed)


def record_scenario(
    day: list[DayFunction],
    *,
    duration_s: float,
    cluster: Cluster,
    timeout_s: float,
    seed: int,
    memory_mb: int = 256,
    limit: int = 50,
) -> Scenario:
    """The 2021 layout: every call at its own time."""
    merged = sorted((t, i) for i, function in enumerate(day) for t in function.arrivals_s)
    arrivals = RecordArrivals(
        array("d", (t for t, _ in merged)), array("l", (i for _, i in merged)), duration_s
    )
    return Scenario("day-2021", _actions(day, memory_mb, limit), cluster, arrivals, timeout_s, seed)


def write_records(day: list[DayFunction], path: Path, seed: int = DAY_SEED) -> Path:
    """The day in the 2021 layout: ``app,func,end_timestamp,duration`` (seconds)."""
    rng = random.Random(f"{seed}-records")
    rows = sorted(
        (t + function.run_ms.draw(rng) / 1000, function.name, t)
        for function in day
        for t in function.arrivals_s
    )
    with path.open("w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(RECORD_COLUMNS)
        for end_s, name, start_s in rows:
            writer.writerow([f"app-{name}", name, f"{end_s:.3f}", f"{end_s - start_s:.3f}"])
    return path


def read_records(path: Path) -> list[DayFunction]:
    """Functions from a 2021-layout file: arrivals and their own recorded durations."""
    calls: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    try:
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            if missing := [c for c in RECORD_COLUMNS if c not in (reader.fieldnames or [])]:
                raise ConfigError(f"{path}: missing column(s) {', '.join(missing)}")
            for row in reader:
                try:
                    end_s, duration_s = float(row["end_timestamp"]), float(row["duration"])
                except ValueError as exc:
                    raise ConfigError(f"{path}: a time is not a number: {exc}") from exc
                starts, durations = calls.setdefault((row["app"], row["func"]), ([], []))
                starts.append(max(0.0, end_s - duration_s))
                durations.append(max(0.0, duration_s) * 1000)
    except FileNotFoundError as exc:
        raise ConfigError(f"trace file not found: {path}") from exc
    return [
        DayFunction(func, "recorded", array("d", sorted(starts)), EmpiricalRunTime(tuple(ms)))
        for (_, func), (starts, ms) in calls.items()
    ]
