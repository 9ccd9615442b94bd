"""cold-chain: a three-step sequence with and without pre-warming its later steps.

The chain of the Korea University paper (Airflow on Knative): steps of 3 s, 7 s and
5 s, each with a cold start of about a second; about 18 s end to end, of which
pre-warming the dependent steps when the first starts saved about 2 s. Here the chain
is a sequence action of three actions that run ``broker_sched.bench.chain_step:step``;
on the process runtime a worker's import takes ``init_s`` (the paper's second), on the
Docker runtime a container's own cold start is what the step waits for.

Each mode gets its own stack, both up at once, their runs taking turns: one warm-up run
each, so the pre-warmer has measured run times and cold starts to time its asks with
(the first run of a chain asks for every later step at once), then ``runs`` measured
runs each, every one after every container of both stacks is gone, so each starts
cold. Reported per mode: end-to-end time, the steps that waited for a container (cold
starts) and for how long, and the container-seconds pre-warmed containers sat ready
before their step (the waste). The target: the saving is at least the later steps'
cold starts, which is what pre-warming can remove.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import statistics
import time
from collections.abc import Iterator
from typing import Any

from pydantic import JsonValue

from broker_sched.bench.cell import delete_queues
from broker_sched.bench.chain_step import INIT_ENV
from broker_sched.bench.context import BenchContext
from broker_sched.bench.report import Report, Table, Target, at_least
from broker_sched.bench.settings import derive, run_tag
from broker_sched.config import Settings
from broker_sched.errors import ConfigError
from broker_sched.model import Action, ActivationResult, Start
from broker_sched.scheduler.chain_warmer import WarmingLedger
from broker_sched.stack import Stack

HANDLER = "broker_sched.bench.chain_step:step"
MODES = ("without", "with")
KEEP_ALIVE_S = 3.0
"""Idle containers leave soon, so each measured run starts cold; a pre-warmed one waits
for its step the lead plus at most the spread of the measured cold starts (up to 1.3 s
each way on Docker here), within it."""
GONE_TIMEOUT_S = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    steps_s: tuple[float, ...]
    init_s: float
    runs: int


FULL = Plan(steps_s=(3.0, 7.0, 5.0), init_s=1.0, runs=3)
QUICK = Plan(steps_s=(0.3, 0.7, 0.5), init_s=0.2, runs=2)


async def run(ctx: BenchContext) -> Report:
    plan = QUICK if ctx.quick else FULL
    runtime = ctx.base.runtime
    if runtime == "simulated":
        raise ConfigError("cold-chain runs real handlers: use the process or docker runtime")
    transport = ctx.transports[0]
    result = ColdChainResult.of(await _run_modes(ctx, transport, plan))
    steps = " / ".join(f"{s:g} s" for s in plan.steps_s)
    report = Report(
        scenario="cold-chain",
        title=f"cold-chain: a {steps} sequence, with and without pre-warming",
        quick=ctx.quick,
        summary=(
            f"A sequence of three actions ({steps}) on the {runtime} runtime and the "
            f"{transport} transport; "
            + (f"each worker's import takes {plan.init_s:g} s; " if runtime == "process" else "")
            + f"one warm-up run, then {plan.runs} runs per mode, taking turns, each from "
            "no container."
        ),
        data={
            "runtime": runtime,
            "transport": transport,
            "plan": dataclasses.asdict(plan),
            **result.to_json(),
        },
    )
    report.tables.append(_table(result))
    report.targets.append(_target(result))
    return report


def _settings(ctx: BenchContext, transport: str, plan: Plan, mode: str) -> Settings:
    tag = run_tag()
    return derive(
        ctx.settings_for(transport),
        {
            "queue_template": f"bench-{tag}-{{namespace}}-{{action}}",
            "invoker": {
                "id": f"chain{tag}",
                "keep_alive_s": KEEP_ALIVE_S,
                "pause_grace_s": 2 * KEEP_ALIVE_S,
                "heartbeat_interval_s": 0.25,
            },
            "sequences": {"prewarm": mode == "with"},
            "invocation_timeout_s": 10 * sum(plan.steps_s) + 60,
        },
    )


async def _run_modes(ctx: BenchContext, transport: str, plan: Plan) -> dict[str, ModeResult]:
    """Both modes' stacks at once, their runs taking turns, so that drift in what else
    the machine and its Docker engine are doing hits both modes alike."""
    steps = [Action(name=f"step{i + 1}", handler=HANDLER) for i in range(len(plan.steps_s))]
    chain = Action(name="chain", sequence=tuple(step.name for step in steps))
    actions = {a.fqn: a for a in [*steps, chain]}
    runs: dict[str, list[ChainRun]] = {mode: [] for mode in MODES}
    with _init_cost(plan.init_s):
        async with contextlib.AsyncExitStack() as exits:
            stacks: dict[str, Stack] = {}
            for mode in MODES:
                settings = _settings(ctx, transport, plan, mode)
                stacks[mode] = await exits.enter_async_context(Stack(settings, actions=actions))
            for index in range(plan.runs + 1):
                for mode, stack in stacks.items():
                    for each in stacks.values():
                        await _until_no_container(each, steps)
                    measured = await _run_once(stack, plan)
                    label = "warm-up run" if index == 0 else f"run {index}"
                    ctx.progress.note(f"cold-chain {mode}: {label} {measured.end_to_end_s} s")
                    if index:
                        runs[mode].append(measured)
            for stack in stacks.values():
                queues = [stack.settings.queue_name(a.namespace, a.name) for a in steps]
                await delete_queues(stack.transport, queues)
            return {
                mode: ModeResult.of(runs[mode], _ledger(stack)) for mode, stack in stacks.items()
            }


@contextlib.contextmanager
def _init_cost(init_s: float) -> Iterator[None]:
    """Workers started meanwhile take ``init_s`` to import the step (see chain_step)."""
    previous = os.environ.get(INIT_ENV)
    os.environ[INIT_ENV] = str(init_s)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(INIT_ENV, None)
        else:
            os.environ[INIT_ENV] = previous


def _ledger(stack: Stack) -> WarmingLedger:
    controller = stack.controller
    assert controller is not None
    return controller.sequences.ledger


async def _run_once(stack: Stack, plan: Plan) -> ChainRun:
    controller = stack.controller
    assert controller is not None
    ledger = controller.sequences.ledger
    wasted_before_s, asked_before = ledger.wasted_s, ledger.asked
    payload: dict[str, JsonValue] = {"steps_s": list(plan.steps_s), "step": 0}
    started_s = time.monotonic()
    result = await controller.invoke("chain", payload)
    took_s = time.monotonic() - started_s
    if not result.ok:
        raise RuntimeError(f"cold-chain: the chain failed: {result.error}")
    return ChainRun.of(
        took_s,
        [controller.results[step_id] for step_id in result.steps],
        ledger.wasted_s - wasted_before_s,
        ledger.asked - asked_before,
    )


async def _until_no_container(stack: Stack, steps: list[Action]) -> None:
    """Wait until no container of the chain is left, nor believed left by the controller."""
    controller = stack.controller
    assert controller is not None
    deadline_s = time.monotonic() + GONE_TIMEOUT_S
    while any(invoker.proxies for invoker in stack.invokers) or any(
        controller.cluster.running(step.fqn) + controller.cluster.creating(step.fqn)
        for step in steps
    ):
        if time.monotonic() > deadline_s:
            raise TimeoutError(f"the chain's containers were not gone in {GONE_TIMEOUT_S:g} s")
        await asyncio.sleep(0.05)


def _table(result: ColdChainResult) -> Table:
    rows = []
    for mode, measured in result.modes.items():
        saving = f"{result.saving_s:.2f}" if mode == "with" else "-"
        rows.append(
            [
                f"{mode} pre-warming",
                len(measured.runs),
                f"{measured.mean_end_to_end_s:.2f}",
                f"{measured.mean_after_first_start_s:.2f}",
                f"{measured.mean_cold_starts:.1f}",
                f"{measured.mean_later_container_wait_s:.2f}",
                saving,
                f"{measured.mean_wasted_container_s:.2f}",
                measured.released,
            ]
        )
    return Table(
        "End to end, per run (means)",
        [
            "mode",
            "runs",
            "end-to-end s",
            "after step 1's start s",
            "cold starts",
            "later steps' container wait s",
            "saving s",
            "wasted container-s",
            "released",
        ],
        rows,
        note=(
            f"later steps' cold starts without pre-warming: {result.later_cold_starts_s:.2f} s; "
            f"saving after step 1's own start (which pre-warming does not touch): "
            f"{result.saving_after_first_start_s:.2f} s"
        ),
    )


def _target(result: ColdChainResult) -> Target:
    return at_least(
        "saving ÷ the later steps' cold starts",
        result.saving_per_later_cold_start,
        1.0,
        "pre-warming left part of the later steps' cold starts on the chain's path",
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ChainRun:
    """One run of the chain, as it went: each step's start and wait for its container."""

    end_to_end_s: float
    starts: list[str]
    cold_starts: int
    """Steps that waited for a container (a cold or a stem cell's start)."""
    container_wait_s: list[float]
    later_container_wait_s: float
    after_first_start_s: float
    """End to end less step 1's wait for its own container, which pre-warming cannot save."""
    wasted_container_s: float
    asked: int

    @classmethod
    def of(
        cls, took_s: float, steps: list[ActivationResult], wasted_s: float, asked: int
    ) -> ChainRun:
        return cls(
            end_to_end_s=round(took_s, 3),
            starts=[str(step.start) for step in steps],
            cold_starts=sum(step.start in (Start.COLD, Start.PREWARM) for step in steps),
            container_wait_s=[round(step.init_ms / 1000, 3) for step in steps],
            later_container_wait_s=round(sum(step.init_ms for step in steps[1:]) / 1000, 3),
            after_first_start_s=round(took_s - steps[0].init_ms / 1000, 3),
            wasted_container_s=round(wasted_s, 3),
            asked=asked,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ModeResult:
    """One mode's measured runs and their means."""

    runs: list[ChainRun]
    mean_end_to_end_s: float
    mean_after_first_start_s: float
    mean_cold_starts: float
    mean_later_container_wait_s: float
    mean_wasted_container_s: float
    released: int
    """Warmed containers released unused over the whole bench, warm-up run included."""

    @classmethod
    def of(cls, runs: list[ChainRun], ledger: WarmingLedger) -> ModeResult:
        def mean(key: str) -> float:
            return round(statistics.fmean(getattr(run, key) for run in runs), 3)

        return cls(
            runs=runs,
            mean_end_to_end_s=mean("end_to_end_s"),
            mean_after_first_start_s=mean("after_first_start_s"),
            mean_cold_starts=mean("cold_starts"),
            mean_later_container_wait_s=mean("later_container_wait_s"),
            mean_wasted_container_s=mean("wasted_container_s"),
            released=ledger.released,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class ColdChainResult:
    """Both modes, and what pre-warming saved against what it could."""

    modes: dict[str, ModeResult]
    saving_s: float
    saving_after_first_start_s: float
    later_cold_starts_s: float
    """The later steps' waits for their containers without pre-warming: what it can save."""
    saving_per_later_cold_start: float | None

    @classmethod
    def of(cls, modes: dict[str, ModeResult]) -> ColdChainResult:
        without, with_ = modes["without"], modes["with"]
        saving_s = without.mean_end_to_end_s - with_.mean_end_to_end_s
        later_cold_s = without.mean_later_container_wait_s
        return cls(
            modes=modes,
            saving_s=round(saving_s, 3),
            saving_after_first_start_s=round(
                without.mean_after_first_start_s - with_.mean_after_first_start_s, 3
            ),
            later_cold_starts_s=later_cold_s,
            saving_per_later_cold_start=round(saving_s / later_cold_s, 3) if later_cold_s else None,
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
