"""warm-tiers: what an activation waits for its container, per kind of start.

Measured on the configured runtime directly (no broker, no scheduler), ``samples``
times each, one at a time so nothing contends:

- **cold**: create + init of a new container, then one run;
- **prewarm**: a stem cell made beforehand (not timed), initialised for the action,
  then one run — the init is what a pool cannot save;
- **resumed**: a paused container's resume, then one run;
- **warm**: one run on a running container.

Each is reported as the container's own cost (create + init, init, resume, 0) and the
total with the run, as p50 and p90. The handler is ``broker_sched.samples:echo``, so a
run is the runtime's round trip alone.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass

from broker_sched.bench.context import BenchContext
from broker_sched.bench.report import Report, Table
from broker_sched.errors import ConfigError
from broker_sched.model import Action
from broker_sched.runtime import runtime_from_settings
from broker_sched.runtime.base import Container, Runtime

ACTION = Action(name="tiers", handler="broker_sched.samples:echo", memory_mb=128)
SAMPLES = 15
QUICK_SAMPLES = 3
TIERS = ("cold", "prewarm", "resumed", "warm")
Sample = tuple[float, float]
"""The container's own cost and the total with one run, in ms."""


async def run(ctx: BenchContext) -> Report:
    if ctx.base.runtime == "simulated":
        raise ConfigError("warm-tiers measures a real runtime: use process or docker")
    samples = QUICK_SAMPLES if ctx.quick else SAMPLES
    runtime = runtime_from_settings(ctx.base)
    try:
        measured = await _measure(runtime, samples)
    finally:
        await runtime.close()
    tiers = {tier: TierResult.of(values) for tier, values in measured.items()}
    report = Report(
        scenario="warm-tiers",
        title=f"warm-tiers: what each kind of start costs on the {runtime.name} runtime",
        quick=ctx.quick,
        summary=(
            f"{samples} samples per tier, one at a time, of a no-op handler on the "
            f"{runtime.name} runtime (no broker, no scheduler)."
        ),
        data={
            "runtime": runtime.name,
            "samples": samples,
            "tiers": {tier: asdict(result) for tier, result in tiers.items()},
        },
    )
    report.tables.append(
        Table(
            f"Per start, ms ({runtime.name})",
            ["start", "container p50", "container p90", "with the run p50", "with the run p90"],
            [
                [tier, t.container_p50_ms, t.container_p90_ms, t.total_p50_ms, t.total_p90_ms]
                for tier, t in tiers.items()
            ],
        )
    )
    return report


async def _measure(runtime: Runtime, samples: int) -> dict[str, list[Sample]]:
    measured: dict[str, list[Sample]] = {tier: [] for tier in TIERS}
    kept, _ = await runtime.create(ACTION)
    try:
        for _ in range(samples):
            measured["cold"].append(await _cold(runtime))
            measured["prewarm"].append(await _prewarm(runtime))
            await kept.pause()
            measured["resumed"].append(await _timed(kept.resume, kept))
            measured["warm"].append(await _timed(_no_cost, kept))
    finally:
        await kept.remove()
    return measured


async def _cold(runtime: Runtime) -> Sample:
    started_s = time.perf_counter()
    container, _ = await runtime.create(ACTION)
    try:
        return await _with_run(container, started_s)
    finally:
        await container.remove()


async def _prewarm(runtime: Runtime) -> Sample:
    cell = await runtime.start_stem_cell(ACTION.kind, ACTION.memory_mb)
    started_s = time.perf_counter()
    container, _ = await runtime.initialise(cell, ACTION)
    try:
        return await _with_run(container, started_s)
    finally:
        await container.remove()


async def _timed(step: Callable[[], Awaitable[float]], container: Container) -> Sample:
    started_s = time.perf_counter()
    await step()
    return await _with_run(container, started_s)


async def _no_cost() -> float:
    return 0.0


async def _with_run(container: Container, started_s: float) -> Sample:
    ready_s = time.perf_counter()
    await container.run({"tier": True}, 30.0)
    return (ready_s - started_s) * 1000, (time.perf_counter() - started_s) * 1000


@dataclass(frozen=True, slots=True)
class TierResult:
    """One kind of start: the container's own cost apart from the run, since the run is
    the same whatever the start."""

    container_p50_ms: float
    container_p90_ms: float
    total_p50_ms: float
    total_p90_ms: float

    @classmethod
    def of(cls, values: list[Sample]) -> TierResult:
        own = sorted(value[0] for value in values)
        total = sorted(value[1] for value in values)
        return cls(
            container_p50_ms=round(statistics.median(own), 2),
            container_p90_ms=round(_p90(own), 2),
            total_p50_ms=round(statistics.median(total), 2),
            total_p90_ms=round(_p90(total), 2),
        )


def _p90(ordered: list[float]) -> float:
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
