"""What Docker operations cost on this machine, so simulations can use real numbers.

``measure_docker_ops`` times two cycles through the docker CLI (the docker runtime's
own path), each with 1, 16 and 50 callers at once:

- ``run`` → ``rm``: ``docker run -d`` (create + start) of an idle container, then
  ``docker rm -f``;
- ``pause`` → ``unpause`` of a running container, each caller on its own container.

For each level it reports cycles per second and latency percentiles per operation.
:func:`simulated_costs` turns one level's p10..p90 into the cost ranges of
``[simulated]`` (``create_ms``, ``pause_ms``, ``resume_ms``, ``remove_ms``) and
:func:`simulated_toml` writes them as a TOML snippet for a workload or config file;
``[simulated] from_docker_ops`` reads them straight from the saved ``docker-ops.json``.

Costs grow with contention: the daemon serialises much of its work, so 50 callers see
several times the latency of one. Every phase stops starting new cycles after
``phase_budget_s``, so a slow engine bounds the run instead of stretching it (about a
minute at default sizes; ``quick`` takes seconds). Containers carry a per-run label and
are removed at the end whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from broker_sched.runtime.docker import DEFAULT_MAX_CONCURRENT_OPS, Docker, DockerError

DEFAULT_IMAGE = "broker-sched/debian:bookworm"
"""Any image with ``sleep``; built by ``compose/images/build.sh base``."""
DEFAULT_LEVELS = (1, 16, 50)
DEFAULT_OPS_PER_LEVEL = 40
QUICK_LEVELS = (1, 4)
QUICK_OPS_PER_LEVEL = 6
PHASE_BUDGET_S = 8.0
QUICK_PHASE_BUDGET_S = 3.0
PERCENTILES = (10, 50, 90, 99)
BENCH_LABEL = "broker-sched.bench"
SIMULATED_OPS = {"create_ms": "run", "pause_ms": "pause", "resume_ms": "unpause", "remove_ms": "rm"}
"""``[simulated]`` cost → the measured docker operation it stands for."""


class DockerUnavailable(Exception):
    """No engine answers, or the benchmark image is not built."""


@dataclass
class _Phase:
    """Latencies of one cycle kind at one concurrency level."""

    ops: tuple[str, ...]
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    duration_s: float = 0.0

    def summary(self) -> PhaseResult:
        cycles = min((len(self.latencies_ms.get(op, [])) for op in self.ops), default=0)
        return PhaseResult(
            cycles=cycles,
            duration_s=round(self.duration_s, 3),
            cycles_per_s=round(cycles / self.duration_s, 2) if self.duration_s else 0.0,
            errors=len(self.errors),
            first_error=self.errors[0] if self.errors else None,
            latency_ms={op: summarize(self.latencies_ms.get(op, [])) for op in self.ops},
        )


@dataclass(frozen=True, slots=True)
class PhaseResult:
    """One cycle kind at one concurrency level."""

    cycles: int
    """Complete cycles: the fewest of any of the cycle's operations."""
    duration_s: float
    cycles_per_s: float
    errors: int
    first_error: str | None
    """Kept as text: the engine's own words say why an operation failed."""
    latency_ms: dict[str, dict[str, float]]
    """Per operation, :func:`summarize`'s figures."""


@dataclass(frozen=True, slots=True)
class Level:
    concurrency: int
    run_rm: PhaseResult
    pause_unpause: PhaseResult


@dataclass(frozen=True, slots=True)
class Engine:
    """What the costs depend on besides the concurrency, so a reader can compare runs."""

    server_version: str
    storage_driver: str
    cpus: int | None


@dataclass(frozen=True, slots=True)
class DockerOpsResult:
    """What ``docker-ops.json`` holds, less the ``simulated`` costs derived from it."""

    engine: Engine
    image: str
    ops_per_level: int
    phase_budget_s: float
    levels: list[Level]


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return float("nan")
    rank = (len(sorted_values) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def summarize(values_ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values_ms)
    stats = {f"p{pct}": round(percentile(ordered, pct), 2) for pct in PERCENTILES}
    stats["max"] = round(ordered[-1], 2) if ordered else float("nan")
    stats["n"] = len(ordered)
    return stats


async def measure_docker_ops(
    concurrency_levels: Sequence[int] = DEFAULT_LEVELS,
    ops_per_level: int = DEFAULT_OPS_PER_LEVEL,
    image: str = DEFAULT_IMAGE,
    *,
    phase_budget_s: float = PHASE_BUDGET_S,
    docker: str = "docker",
) -> DockerOpsResult:
    """Time run→rm and pause→unpause cycles at each concurrency level.

    Each phase runs ``max(ops_per_level, concurrency)`` cycles, or fewer if it reaches
    ``phase_budget_s``. Raises :class:`DockerUnavailable` if there is nothing to measure.
    """
    path = shutil.which(docker)
    if path is None:
        raise DockerUnavailable(f"the docker CLI ({docker!r}) is not installed")
    probe = Docker(path)
    try:
        server = (await probe("version", "-f", "{{.Server.Version}}", timeout_s=10)).strip()
        driver = (await probe("info", "-f", "{{.Driver}}", timeout_s=10)).strip()
    except DockerError as exc:
        raise DockerUnavailable(
            f"no Docker engine answers ({exc}); start one with compose/images/engine.sh"
        ) from exc
    try:
        await probe("image", "inspect", "-f", "{{.Id}}", image)
    except DockerError as exc:
        raise DockerUnavailable(
            f"image {image} is not built; run compose/images/build.sh base"
        ) from exc
    bench = _Bench(path, image, f"{BENCH_LABEL}={secrets.token_hex(6)}", phase_budget_s)
    levels = []
    try:
        await bench.warm_up()
        for concurrency in concurrency_levels:
            cycles = max(ops_per_level, concurrency)
            run_rm = await bench.run_rm(concurrency, cycles)
            pause_unpause = await bench.pause_unpause(concurrency, cycles)
            levels.append(Level(concurrency, run_rm.summary(), pause_unpause.summary()))
    finally:
        await bench.clean_up()
    return DockerOpsResult(
        engine=Engine(server_version=server, storage_driver=driver, cpus=os.cpu_count()),
        image=image,
        ops_per_level=ops_per_level,
        phase_budget_s=phase_budget_s,
        levels=levels,
    )


class _Bench:
    def __init__(self, docker_path: str, image: str, label: str, phase_budget_s: float) -> None:
        self.docker_path = docker_path
        self.image = image
        self.label = label
        self.phase_budget_s = phase_budget_s

    def _run_args(self) -> list[str]:
        name = f"bs-bench-{secrets.token_hex(5)}"
        return [
            "run", "--detach", "--pull", "never", "--network", "host", "--name", name,
            "--label", self.label, self.image, "sleep", "infinity",
        ]  # fmt: skip

    async def warm_up(self) -> None:
        """A first run after the engine starts pays for loading the image; not measured."""
        docker = Docker(self.docker_path, 1)
        for _ in range(2):
            container = (await docker(*self._run_args())).strip()
            await docker.remove(container)

    async def run_rm(self, concurrency: int, cycles: int) -> _Phase:
        docker = Docker(self.docker_path, concurrency)
        phase = _Phase(("run", "rm"))

        async def cycle() -> None:
            container = (await self._timed(phase, "run", docker(*self._run_args()))).strip()
            await self._timed(phase, "rm", docker.remove(container))

        await self._drive(phase, concurrency, cycles, lambda _caller: cycle())
        return phase

    async def pause_unpause(self, concurrency: int, cycles: int) -> _Phase:
        docker = Docker(self.docker_path, concurrency)
        phase = _Phase(("pause", "unpause"))
        containers = [
            out.strip()
            for out in await asyncio.gather(
                *(docker(*self._run_args()) for _ in range(concurrency))
            )
        ]

        async def cycle(caller: int) -> None:
            await self._timed(phase, "pause", docker("pause", containers[caller]))
            await self._timed(phase, "unpause", docker("unpause", containers[caller]))

        try:
            await self._drive(phase, concurrency, cycles, cycle)
        finally:
            await docker.remove(*containers)
        return phase

    async def clean_up(self) -> None:
        docker = Docker(self.docker_path, DEFAULT_MAX_CONCURRENT_OPS)
        leftovers = (await docker("ps", "-aq", "--filter", f"label={self.label}")).split()
        if leftovers:
            await docker.remove(*leftovers)

    async def _drive(
        self,
        phase: _Phase,
        concurrency: int,
        cycles: int,
        cycle: Callable[[int], Awaitable[None]],
    ) -> None:
        """``concurrency`` callers share ``cycles``; none starts one after the budget."""
        tickets = iter(range(cycles))
        started_s = time.perf_counter()
        deadline_s = started_s + self.phase_budget_s

        async def caller(index: int) -> None:
            for _ in tickets:
                if time.perf_counter() >= deadline_s:
                    return
                try:
                    await cycle(index)
                except DockerError as exc:
                    phase.errors.append(str(exc))

        await asyncio.gather(*(caller(index) for index in range(concurrency)))
        phase.duration_s = time.perf_counter() - started_s

    @staticmethod
    async def _timed(phase: _Phase, op: str, work: Awaitable[str | None]) -> str:
        started_s = time.perf_counter()
        out = await work
        phase.latencies_ms.setdefault(op, []).append((time.perf_counter() - started_s) * 1000)
        return out or ""


def cost_level(result: DockerOpsResult) -> int:
    """The level whose costs a simulation should use: the lowest with at least as many
    callers as the docker runtime runs ops at once (8) — an invoker busy creating and
    pausing, which is when costs matter — else the highest level measured."""
    levels = [level.concurrency for level in result.levels]
    if not levels:
        raise ValueError("the result has no levels")
    busy = [c for c in levels if c >= DEFAULT_MAX_CONCURRENT_OPS]
    return min(busy) if busy else max(levels)


def simulated_costs(
    result: DockerOpsResult, concurrency: int | None = None
) -> dict[str, tuple[float, float]]:
    """``[simulated]`` cost ranges: p10..p90 of each operation at one concurrency level
    (default: :func:`cost_level`)."""
    levels = {level.concurrency: level for level in result.levels}
    if concurrency is None:
        concurrency = cost_level(result)
    if concurrency not in levels:
        raise ValueError(f"no level with concurrency {concurrency} (have {sorted(levels)})")
    level = levels[concurrency]
    latencies = {**level.run_rm.latency_ms, **level.pause_unpause.latency_ms}
    costs = {}
    for setting, op in SIMULATED_OPS.items():
        stats = latencies[op]
        if not stats["n"]:
            raise ValueError(f"no {op} was measured at concurrency {concurrency}")
        costs[setting] = (stats["p10"], stats["p90"])
    return costs


def simulated_toml(costs: dict[str, tuple[float, float]], source: str = "") -> str:
    """A ``[simulated]`` table to paste into a config or workload file."""
    lines = ["# Docker costs measured on this machine by `broker-sched bench docker-ops`"]
    if source:
        lines.append(f"# {source}")
    lines.append("[simulated]")
    lines += [f"{key} = [{low}, {high}]" for key, (low, high) in costs.items()]
    return "\n".join(lines) + "\n"


def format_table(result: DockerOpsResult) -> str:
    engine = result.engine
    head = (
        f"Docker {engine.server_version} ({engine.storage_driver}, {engine.cpus} CPUs), "
        f"image {result.image}; latencies in ms"
    )
    header = f"{'callers':>7}  {'op':<8} {'n':>4} {'cycles/s':>9} " + " ".join(
        f"{name:>8}" for name in ("p50", "p90", "p99", "max")
    )
    rows = [head, "", header]
    for level in result.levels:
        for phase in (level.run_rm, level.pause_unpause):
            for op, stats in phase.latency_ms.items():
                rows.append(
                    f"{level.concurrency:>7}  {op:<8} {stats['n']:>4} "
                    f"{phase.cycles_per_s:>9.1f} "
                    + " ".join(f"{stats[k]:>8.1f}" for k in ("p50", "p90", "p99", "max"))
                )
            if phase.errors:
                rows.append(f"{'':>7}  {phase.errors} errors, first: {phase.first_error}")
    return "\n".join(rows)


RESULTS_FILE = "docker-ops.json"
"""What ``[simulated] from_docker_ops`` reads: the measurement plus its ``simulated`` costs."""


async def docker_ops_command(
    *, quick: bool, json_output: bool, out: Path, stdout: TextIO | None = None
) -> int:
    """``broker-sched bench docker-ops``: measure; write ``docker-ops.json`` and
    ``simulated.toml`` under ``out``; print a table and the TOML (or the JSON)."""
    stdout = stdout or sys.stdout
    options: dict[str, Any] = {}
    if quick:
        options = {
            "concurrency_levels": QUICK_LEVELS,
            "ops_per_level": QUICK_OPS_PER_LEVEL,
            "phase_budget_s": QUICK_PHASE_BUDGET_S,
        }
    try:
        result = await measure_docker_ops(**options)
    except DockerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    concurrency = cost_level(result)
    costs = simulated_costs(result, concurrency)
    document = {**asdict(result), "simulated": {"concurrency": concurrency, **costs}}
    snippet = simulated_toml(costs, f"p10..p90 with {concurrency} concurrent callers")
    save(out, document, snippet)
    if json_output:
        stdout.write(json.dumps(document, indent=2) + "\n")
        return 0
    stdout.write(f"{format_table(result)}\n\n{snippet}\nreport: {out}/\n")
    return 0


def save(out: Path, document: dict[str, Any], snippet: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULTS_FILE).write_text(json.dumps(document, indent=2) + "\n")
    (out / "simulated.toml").write_text(snippet)
