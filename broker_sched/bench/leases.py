"""leases: a long run executes once, and a dead invoker's work moves within seconds.

Two measurements per transport, both on the settings the user runs (the configured
redelivery windows and heartbeat, nothing shortened for the bench):

* **A long run.** One activation of ``long_run_s`` (45 s, longer than the 30 s windows
  the transports had before invokers renewed their deliveries) on a one-process stack.
  Once it is answered, the bench waits one more window and counts the runs every
  container of the action started, finished or not: more than one is a second execution.
* **Failover.** An invoker process takes ``victims`` activations that each run for
  ``victim_run_s``; once they all run, a second invoker process starts, and the first
  is killed with SIGKILL. Each activation then runs again on the survivor; the bench
  reports how long after the victim's last heartbeat each started there (its answer's
  ``wait_ms`` counts from publishing to the delivery its container accepted). The
  controller runs in the bench process, the invokers in their own, as users deploy them.

Kafka runs twice, on the classic group protocol and on KIP-848; the memory transport
lives in one process and has no failover measurement.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import sys
from dataclasses import asdict, dataclass
from typing import Any

from broker_sched.bench.cell import delete_queues
from broker_sched.bench.context import BenchContext
from broker_sched.bench.processes import STARTUP_TIMEOUT_S, child_environment
from broker_sched.bench.rebalance import KIP848
from broker_sched.bench.report import Report, Table, Target, at_most
from broker_sched.bench.settings import derive, run_tag
from broker_sched.config import Settings
from broker_sched.errors import BrokerSchedError
from broker_sched.model import ActivationResult, Heartbeat, decode, now_ms
from broker_sched.stack import Stack
from broker_sched.topology import HEARTBEATS
from transports.registry import transport_from_settings

FAILOVER_GOAL_S = 5.0
SETTLE_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Plan:
    long_run_s: float
    victims: int
    victim_run_s: float


FULL = Plan(long_run_s=45.0, victims=8, victim_run_s=45.0)
QUICK = Plan(long_run_s=8.0, victims=4, victim_run_s=30.0)
"""A victim's runs outlast starting the survivor on a loaded machine (several seconds)."""


@dataclass(frozen=True, slots=True)
class LongRun:
    variant: str
    run_s: float
    executions: int
    answered: bool
    window_s: float | None


@dataclass(frozen=True, slots=True)
class Failover:
    variant: str
    activations: int
    moved: int
    """Answered by the survivor."""
    first_s: float | None
    """First start on the survivor, in seconds after the victim's last heartbeat: the
    broker's redelivery and one container there."""
    max_s: float | None
    """Latest start on the survivor: also how many containers the controller started
    there for the redelivered work."""
    median_s: float | None
    unanswered: int
    done_before_kill: int
    """Answered by the victim: those finished before it was killed (none, normally)."""


def variants(ctx: BenchContext, transport: str) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = [(transport, {})]
    with_transport = ctx.transport(transport)
    if with_transport.capabilities.rebalances:
        found.append((f"{transport} (KIP-848)", KIP848))
    return found


def action_settings(
    ctx: BenchContext, transport: str, overrides: dict[str, Any], action: str, run_s: float
) -> Settings:
    return derive(
        ctx.settings_for(transport, overrides),
        {
            "runtime": "simulated",
            "queue_template": "{namespace}-{action}",
            "actions": [{"name": action, "timeout_s": run_s + 120.0}],
        },
    )


async def long_run(
    ctx: BenchContext, name: str, transport: str, overrides: dict[str, Any], plan: Plan
) -> LongRun:
    action = f"long-{run_tag()}"
    settings = action_settings(ctx, transport, overrides, action, plan.long_run_s)
    fqn = f"guest/{action}"
    async with Stack(settings) as stack:
        controller = stack.controller
        assert controller is not None
        window_s = stack.invokers[0].transport.redelivery_window_s
        result = await controller.invoke(
            action, {"sleep_ms": plan.long_run_s * 1000}, timeout_s=plan.long_run_s + 90.0
        )
        # A second execution that a lapsed lease started late is still running now.
        await asyncio.sleep(min(window_s or 0.0, 60.0) + 2.0)
        executions = 0
        for invoker in stack.invokers:
            executions += sum(
                int(event.detail.get("runs", 0))
                for event in invoker.timeline.of_kind("container_removed")
                if event.action == fqn
            )
            executions += sum(p.runs + p.busy for p in invoker.proxies if p.action == fqn)
    async with transport_from_settings(settings) as cleaner:
        await delete_queues(cleaner, [settings.queue_name("guest", action)])
    return LongRun(name, plan.long_run_s, executions, result.ok, window_s)


async def failover(
    ctx: BenchContext, name: str, transport: str, overrides: dict[str, Any], plan: Plan
) -> Failover:
    tag = run_tag()
    action = f"failover-{tag}"
    settings = derive(
        action_settings(ctx, transport, overrides, action, plan.victim_run_s),
        {"kafka": {"default_partitions": plan.victims}},
    )
    queue = settings.queue_name("guest", action)
    victim_id, survivor_id = f"victim-{tag[-6:]}", f"survivor-{tag[-6:]}"
    command = [sys.executable, "-m", "broker_sched.cli", "run", "--role", "invoker", "--api", "off"]

    async def start(invoker_id: str) -> asyncio.subprocess.Process:
        env = child_environment(derive(settings, {"invoker": {"id": invoker_id}}))
        return await asyncio.create_subprocess_exec(*command, env=env)

    last_beat: dict[str, Heartbeat] = {}
    fqn = f"guest/{action}"
    victim_busy = asyncio.Event()
    victim = await start(victim_id)
    survivor: asyncio.subprocess.Process | None = None
    try:
        async with (
            transport_from_settings(settings) as observer,
            Stack(settings, role="controller") as stack,
        ):
            controller = stack.controller
            assert controller is not None
            listener = await observer.listen(HEARTBEATS)

            async def beats() -> None:
                while True:
                    body = await listener.receive(1.0)
                    if body is not None:
                        beat = decode(Heartbeat, body)
                        last_beat[beat.invoker_id] = beat
                        if beat.invoker_id == victim_id and _all_busy(beat, fqn, plan.victims):
                            victim_busy.set()

            async def live(invoker_id: str, process: asyncio.subprocess.Process) -> None:
                async with asyncio.timeout(STARTUP_TIMEOUT_S):
                    while invoker_id not in {b.invoker_id for b in controller.cluster.live()}:
                        if process.returncode is not None:
                            raise BrokerSchedError(f"invoker {invoker_id} exited")
                        await asyncio.sleep(0.1)

            watching = asyncio.create_task(beats())
            submitted: list[tuple[int, asyncio.Task[ActivationResult]]] = []
            try:
                await live(victim_id, victim)
                for _ in range(plan.victims):
                    call = controller.invoke(
                        action,
                        {"sleep_ms": plan.victim_run_s * 1000},
                        timeout_s=plan.victim_run_s * 2 + 90.0,
                    )
                    submitted.append((now_ms(), asyncio.create_task(call)))
                # Running: the victim says so in its heartbeat (how many containers of the
                # action, none idle); backlogs cannot, as Kafka's in-flight count is per process.
                async with asyncio.timeout(SETTLE_TIMEOUT_S):
                    await victim_busy.wait()
                survivor = await start(survivor_id)
                await live(survivor_id, survivor)
                os.kill(victim.pid, signal.SIGKILL)
                await victim.wait()
                results = await asyncio.gather(
                    *(task for _, task in submitted), return_exceptions=True
                )
            finally:
                for _, task in submitted:
                    task.cancel()
                watching.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watching
                await listener.close()
    finally:
        for process in (victim, survivor):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await process.wait()
    async with transport_from_settings(settings) as cleaner:
        await delete_queues(cleaner, [queue])
    last_ms = last_beat[victim_id].sent_ms if victim_id in last_beat else None
    after_s = [
        (submitted_ms + result.wait_ms - last_ms) / 1000
        for (submitted_ms, _), result in zip(submitted, results, strict=True)
        if isinstance(result, ActivationResult)
        and result.ok
        and result.invoker_id == survivor_id
        and last_ms is not None
    ]
    answered = sum(1 for r in results if isinstance(r, ActivationResult) and r.ok)
    done_before_kill = sum(
        1 for r in results if isinstance(r, ActivationResult) and r.invoker_id == victim_id
    )
    return Failover(
        name,
        plan.victims,
        len(after_s),
        min(after_s) if after_s else None,
        max(after_s) if after_s else None,
        statistics.median(after_s) if after_s else None,
        plan.victims - answered,
        done_before_kill,
    )


def _all_busy(beat: Heartbeat, fqn: str, containers: int) -> bool:
    return beat.containers.get(fqn, 0) >= containers and not beat.idle_s.get(fqn)


async def run(ctx: BenchContext) -> Report:
    plan = QUICK if ctx.quick else FULL
    long_runs: list[LongRun] = []
    failovers: list[Failover] = []
    for transport in ctx.transports:
        for name, overrides in variants(ctx, transport):
            ctx.progress.note(f"{name}: a {plan.long_run_s:g} s run")
            long_runs.append(await long_run(ctx, name, transport, overrides, plan))
            if transport != "memory":
                ctx.progress.note(f"{name}: kill -9 of an invoker running {plan.victims}")
                try:
                    failovers.append(await failover(ctx, name, transport, overrides, plan))
                except (TimeoutError, BrokerSchedError) as exc:
                    ctx.progress.note(f"{name}: failover not measured: {exc!r}")
                    failovers.append(
                        Failover(name, plan.victims, 0, None, None, None, plan.victims, 0)
                    )
    report = Report(
        "leases",
        "Leases: long runs execute once; a dead invoker's work moves within seconds",
        ctx.quick,
        summary=(
            f"A {plan.long_run_s:g} s run on the configured settings, and an invoker killed "
            f"-9 while running {plan.victims} activations of {plan.victim_run_s:g} s."
        ),
    )
    report.data["long_runs"] = [asdict(row) for row in long_runs]
    report.data["failovers"] = [asdict(row) for row in failovers]
    report.tables.append(
        Table(
            "A long run, invoked once",
            ["transport", "run s", "redelivery window s", "answered", "executions"],
            [[r.variant, r.run_s, _round(r.window_s), r.answered, r.executions] for r in long_runs],
        )
    )
    report.tables.append(
        Table(
            "An invoker killed -9: its activations start on the survivor, s after its last "
            "heartbeat",
            ["transport", "activations", "moved", "first s", "median s", "max s", "unanswered"],
            [
                [
                    f.variant,
                    f.activations,
                    f.moved,
                    _round(f.first_s),
                    _round(f.median_s),
                    _round(f.max_s),
                    f.unanswered,
                ]
                for f in failovers
            ],
        )
    )
    report.targets += _targets(long_runs, failovers)
    return report


def _round(value: float | None) -> float | str:
    return "—" if value is None else round(value, 2)


def _targets(long_runs: list[LongRun], failovers: list[Failover]) -> list[Target]:
    targets = [
        at_most(
            f"{r.variant}: executions of one {r.run_s:g} s run",
            r.executions,
            1,
            "a delivery whose lease lapsed ran again",
        )
        for r in long_runs
    ]
    targets += [
        at_most(
            f"{f.variant}: failover, s after the last heartbeat (max)",
            f.max_s if f.moved == f.activations else None,
            FAILOVER_GOAL_S,
            "the broker's redelivery (its window, or Kafka's session timeout), then the "
            "controller's detection of the dead invoker and a container start on the survivor",
        )
        for f in failovers
    ]
    return targets
