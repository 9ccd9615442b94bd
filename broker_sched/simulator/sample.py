"""A synthetic trace in the Azure Functions 2019 layout, for when the real one is not at hand.

The real trace cannot be shipped or downloaded here, so the simulator comes with a
small trace of its own making, shaped after what the trace's paper reports ("Serverless
in the Wild", ATC 2020): invocation rates spread over orders of magnitude — a few hot
functions take most invocations while most are rare — a large share are timers firing
on a fixed period, and run times are long-tailed (lognormal per function, medians from
milliseconds to seconds; the hot functions are the fast ones). Everything is drawn
from one seeded ``random.Random``, so the same seed writes byte-identical files.

Kinds of function and their share of the count:

- ``hot`` (5 %): 1-60 per second, with a slow swell and occasional 3x bursts;
- ``busy`` (15 %): 1-60 per minute;
- ``timer`` (30 %): every 1, 5, 10, 15, 30 or 60 minutes, 1 invocation (or a few);
- ``rare`` (50 %): a Poisson rate of 0.005-0.5 per minute.
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

from broker_sched.simulator.trace import (
    DURATION_COLUMNS,
    INVOCATION_COLUMNS,
    PERCENTILES,
    PercentileRunTime,
    Trace,
    TraceFunction,
)

SAMPLE_FUNCTIONS = 200
SAMPLE_MINUTES = 60
SAMPLE_SEED = 2019
INVOCATIONS_FILE = "invocations_per_function_md.anon.sample.csv"
DURATIONS_FILE = "function_durations_percentiles.anon.sample.csv"

_KINDS = (("hot", 0.05), ("busy", 0.15), ("timer", 0.30), ("rare", 0.50))
_TRIGGERS = {
    "hot": ("http", "event", "queue"),
    "busy": ("http", "queue", "storage", "event"),
    "timer": ("timer",),
    "rare": ("http", "queue", "storage", "orchestration", "others"),
}
_NORMAL_QUANTILES = {0: -3.09, 1: -2.326, 25: -0.674, 50: 0.0, 75: 0.674, 99: 2.326, 100: 3.72}
"""Standard normal quantiles of the percentiles (0 and 100 read as 0.1 % and 99.99 %)."""


def generate_trace(
    functions: int = SAMPLE_FUNCTIONS, minutes: int = SAMPLE_MINUTES, seed: int = SAMPLE_SEED
) -> Trace:
    rng = random.Random(seed)
    kinds = _assign_kinds(functions, rng)
    rows: list[TraceFunction] = []
    owner, app = _hash(rng), _hash(rng)
    for kind in kinds:
        if rng.random() < 0.3:
            app = _hash(rng)
            if rng.random() < 0.5:
                owner = _hash(rng)
        per_minute = _counts(kind, minutes, rng)
        run_ms, average_ms = _durations(kind, rng)
        rows.append(
            TraceFunction(
                owner,
                app,
                _hash(rng),
                rng.choice(_TRIGGERS[kind]),
                per_minute,
                run_ms,
                average_ms,
            )
        )
    return Trace(tuple(rows), minutes)


def _assign_kinds(functions: int, rng: random.Random) -> list[str]:
    kinds = [kind for kind, share in _KINDS for _ in range(round(share * functions))]
    kinds = (kinds + ["rare"] * functions)[:functions]
    rng.shuffle(kinds)
    return kinds


def _hash(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def _counts(kind: str, minutes: int, rng: random.Random) -> tuple[int, ...]:
    if kind == "timer":
        period = rng.choice((1, 5, 10, 15, 30, 60))
        phase = rng.randrange(period)
        fires = rng.choice((1, 1, 1, 2, 5))
        return tuple(fires if (m + phase) % period == 0 else 0 for m in range(minutes))
    if kind == "hot":
        per_s = math.exp(rng.uniform(math.log(1), math.log(60)))
        swell = rng.uniform(0, 2 * math.pi)
        counts = []
        for m in range(minutes):
            level = per_s * 60 * (1 + 0.5 * math.sin(swell + 2 * math.pi * m / minutes))
            if rng.random() < 0.05:
                level *= 3
            counts.append(_poisson(level, rng))
        return tuple(counts)
    low, high = (1.0, 60.0) if kind == "busy" else (0.005, 0.5)
    per_minute = math.exp(rng.uniform(math.log(low), math.log(high)))
    return tuple(_poisson(per_minute, rng) for _ in range(minutes))


def _poisson(mean: float, rng: random.Random) -> int:
    """A Poisson draw; a normal approximation above 50 (exact enough, and fast)."""
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    threshold, count, product = math.exp(-mean), 0, rng.random()
    while product > threshold:
        count += 1
        product *= rng.random()
    return count


def _durations(kind: str, rng: random.Random) -> tuple[PercentileRunTime, float]:
    low_ms, high_ms = (2.0, 100.0) if kind == "hot" else (5.0, 3000.0)
    median_ms = math.exp(rng.uniform(math.log(low_ms), math.log(high_ms)))
    sigma = rng.uniform(0.2, 1.0)
    points = tuple(
        (p / 100, round(median_ms * math.exp(sigma * _NORMAL_QUANTILES[p]), 3)) for p in PERCENTILES
    )
    return PercentileRunTime(points), round(median_ms * math.exp(sigma**2 / 2), 3)


def write_trace(trace: Trace, directory: Path) -> tuple[Path, Path]:
    """Write the invocations and durations files of ``trace``; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    invocations, durations = directory / INVOCATIONS_FILE, directory / DURATIONS_FILE
    minute_columns = [str(m) for m in range(1, trace.minutes + 1)]
    with invocations.open("w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow([*INVOCATION_COLUMNS, *minute_columns])
        for f in trace.functions:
            writer.writerow([f.owner, f.app, f.function, f.trigger, *f.per_minute])
    with durations.open("w", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(DURATION_COLUMNS)
        for f in trace.functions:
            values = [ms for _, ms in f.run_ms.points]
            count = f.invocations
            writer.writerow(
                [f.owner, f.app, f.function, f.average_ms, count, values[0], values[-1], *values]
            )
    return invocations, durations


if __name__ == "__main__":
    import sys

    for path in write_trace(generate_trace(), Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(path)
