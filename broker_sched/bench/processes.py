"""The deployment users run: the controller in one process, invokers in others.

The bench process holds the callers and a controller-only stack; ``broker-sched run
--role invoker --workers N`` runs the invokers as N child processes on the same broker,
configured through ``BROKER_SCHED_*`` variables with the same noop action as the
one-process side (broker addresses and credentials come from the environment they
inherit, as in a deployment configured by environment). CPU per 1,000 activations
adds the children's CPU (from ``/proc``) to this process's, so the two deployments are
compared on the same total. The memory transport lives in one process and is skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from broker_sched.bench.cell import delete_queues
from broker_sched.bench.floor import (
    REPLY_TIMEOUT_S,
    TARGET_CALLERS,
    FloorPlan,
    ScheduledResult,
    closed_loop_window,
    ratio,
    scheduled_settings,
    scheduled_side,
)
from broker_sched.bench.progress import Progress
from broker_sched.bench.report import Report, Table, Target, at_least
from broker_sched.bench.settings import run_tag
from broker_sched.config import ENV_PREFIX, Settings
from broker_sched.errors import BrokerSchedError
from broker_sched.stack import Stack
from transports.registry import transport_from_settings

STARTUP_TIMEOUT_S = 30.0
CHILD_SETTINGS = ("transport", "runtime", "actions", "simulated", "invoker", "kafka")
"""What the children must agree on with this process; the rest comes from the same
environment and config file they inherit."""


@dataclass(frozen=True, slots=True)
class SplitResult(ScheduledResult):
    workers: int


@dataclass(frozen=True, slots=True)
class DeploymentRow:
    """One deployment of the scheduled side, against the one-process one."""

    transport: str
    deployment: str
    side: ScheduledResult
    tps_vs_one: float | None

    def to_json(self) -> dict[str, Any]:
        """As in ``results.json``: the side's fields inline, beside the deployment's."""
        return {
            "transport": self.transport,
            "deployment": self.deployment,
            **asdict(self.side),
            "tps_vs_one": self.tps_vs_one,
        }


def child_environment(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    values = settings.model_dump(mode="json", include=set(CHILD_SETTINGS))
    for key, value in values.items():
        env[f"{ENV_PREFIX}{key.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def children_cpu_s(pids: list[int]) -> float | None:
    """User + system CPU seconds of ``pids`` and their children, from ``/proc``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in _with_descendants(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _with_descendants(pids: list[int]) -> list[int]:
    found = list(pids)
    for pid in pids:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        found += _with_descendants([int(child) for child in children])
    return found


async def split_side(
    base: Settings,
    transport: str,
    callers: int,
    workers: int,
    *,
    warmup_s: float,
    duration_s: float,
) -> SplitResult:
    """The controller here, ``workers`` invoker processes beside it."""
    action = f"noop-{run_tag()}"
    settings = scheduled_settings(base, transport, callers, action)
    command = [sys.executable, "-m", "broker_sched.cli", "run", "--role", "invoker"]
    command += ["--workers", str(workers), "--api", "off"]
    invokers = await asyncio.create_subprocess_exec(*command, env=child_environment(settings))
    try:
        async with Stack(settings, role="controller") as stack:
            controller = stack.controller
            assert controller is not None
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                while len(controller.cluster.live()) < workers:
                    if invokers.returncode is not None:
                        raise BrokerSchedError(f"invoker processes exited ({invokers.returncode})")
                    await asyncio.sleep(0.1)

            async def call() -> None:
                result = await controller.invoke(action, None, timeout_s=REPLY_TIMEOUT_S)
                if not result.ok:
                    raise BrokerSchedError(f"{result.status}: {result.error}")

            cpu_at: dict[str, float | None] = {}

            async def child_cpu_marks() -> None:
                await asyncio.sleep(warmup_s)
                cpu_at["start"] = children_cpu_s([invokers.pid])
                await asyncio.sleep(duration_s)
                cpu_at["end"] = children_cpu_s([invokers.pid])

            marks = asyncio.create_task(child_cpu_marks())
            window = await closed_loop_window(
                callers, call, warmup_s=warmup_s, duration_s=duration_s
            )
            await marks
            fqn = f"guest/{action}"
            containers = sum(beat.containers.get(fqn, 0) for beat in controller.cluster.live())
    finally:
        if invokers.returncode is None:
            invokers.send_signal(signal.SIGTERM)
        await invokers.wait()
    async with transport_from_settings(settings) as cleaner:
        await delete_queues(cleaner, [settings.queue_name("guest", action)])
    summary = window.summary()
    start, end = cpu_at.get("start"), cpu_at.get("end")
    cpu_s_per_1k = None
    if summary.completed and start is not None and end is not None:
        own = summary.cpu_s_per_1k or 0.0
        cpu_s_per_1k = own + (end - start) / summary.completed * 1000
    counted = replace(summary, cpu_s_per_1k=cpu_s_per_1k)
    return SplitResult(**asdict(counted), containers=containers, workers=workers)


async def add_processes(
    report: Report, base: Settings, transports: list[str], plan: FloorPlan, progress: Progress
) -> None:
    """The multi-process comparison for every network transport, into ``report``."""
    rows = [
        row
        for transport in transports
        if transport != "memory" and plan.invoker_processes
        for row in await measure_processes(base, transport, plan, progress)
    ]
    report.data["processes"] = [row.to_json() for row in rows]
    if rows:
        report.tables.append(processes_table(rows))
        report.targets += processes_targets(rows)


async def measure_processes(
    base: Settings, transport: str, plan: FloorPlan, progress: Progress
) -> list[DeploymentRow]:
    """One process against the controller beside 1 and 2 invoker processes."""
    callers = TARGET_CALLERS
    warmup_s = plan.warmup_for(transport)
    one = await scheduled_side(
        base, transport, callers, warmup_s=warmup_s, duration_s=plan.duration_s
    )
    sides: list[tuple[str, ScheduledResult]] = [("one process", one)]
    for workers in plan.invoker_processes:
        split = await split_side(
            base, transport, callers, workers, warmup_s=warmup_s, duration_s=plan.duration_s
        )
        sides.append((f"controller + {workers} invoker proc", split))
        progress.note(
            f"{transport} split ({workers} invoker processes): {split.tps:.0f}/s, "
            f"one process {one.tps:.0f}/s"
        )
    return [
        DeploymentRow(transport, deployment, side, ratio(side.tps, one.tps))
        for deployment, side in sides
    ]


def processes_table(rows: list[DeploymentRow]) -> Table:
    return Table(
        f"One process against separate controller and invoker processes ({TARGET_CALLERS} callers)",
        ["transport", "deployment", "TPS", "p50 ms", "p99 ms", "CPU s/1k", "TPS ÷ one"],
        [
            [
                r.transport,
                r.deployment,
                r.side.tps,
                r.side.p50_ms,
                r.side.p99_ms,
                r.side.cpu_s_per_1k,
                r.tps_vs_one,
            ]
            for r in rows
        ],
        note=(
            "The callers and the controller share the bench process; invokers run as "
            "`broker-sched run --role invoker --workers N`. CPU s/1k adds the invoker "
            "processes' CPU."
        ),
    )


def processes_targets(rows: list[DeploymentRow]) -> list[Target]:
    best: dict[str, float | None] = {}
    for row in rows:
        if row.deployment != "one process":
            ratio = row.tps_vs_one
            current = best.get(row.transport)
            best[row.transport] = ratio if current is None or (ratio or 0) > current else current
    return [
        at_least(
            f"{transport}: best multi-process TPS ÷ one process",
            ratio,
            1.0,
            "on 2 shared cores the extra processes compete with the broker and each other",
        )
        for transport, ratio in best.items()
    ]
