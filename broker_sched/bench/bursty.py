"""bursty: bursts with quiet gaps longer than the keep-alive, under three retentions.

One action gets ``bursts`` bursts of ``size`` activations at once, each after ``gap_s``
of quiet since the last one ended, on the simulated runtime (Docker-like create costs
from ``[simulated]``). The gap is longer than ``keep_alive_s``, so with the keep-alive
alone every burst starts from no container. Against it: ``last_container_retention_s``
(the action's last container stays past the gap) and ``scale_down_delay_s`` (no
container leaves until the quiet has lasted past the gap). Reported per retention: cold
starts, how the bursts' activations started, their latency, and the container-seconds
held (containers up, integrated from the first burst until the last container left:
what the retention costs).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from typing import Any

from broker_sched.bench.cell import delete_queues
from broker_sched.bench.context import BenchContext
from broker_sched.bench.histogram import LatencyHistogram
from broker_sched.bench.report import Report, Table
from broker_sched.bench.settings import derive, run_tag
from broker_sched.config import Settings
from broker_sched.model import Action
from broker_sched.stack import Stack

SAMPLE_INTERVAL_S = 0.05
GONE_MARGIN_S = 5.0
"""After the last burst, containers are counted until they are gone, at most this long
beyond the longest retention."""


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    bursts: int
    size: int
    gap_s: float
    keep_alive_s: float
    run_ms: float


FULL = Plan(bursts=5, size=8, gap_s=12.0, keep_alive_s=10.0, run_ms=200.0)
QUICK = Plan(bursts=3, size=6, gap_s=1.0, keep_alive_s=0.5, run_ms=300.0)


def retentions(plan: Plan) -> dict[str, dict[str, float]]:
    """The variants: each retention long enough to bridge the gap, or off."""
    bridge_s = 2 * plan.gap_s
    return {
        "keep-alive only": {},
        "last-container retention": {"last_container_retention_s": bridge_s},
        "scale-down delay": {"scale_down_delay_s": bridge_s},
    }


async def run(ctx: BenchContext) -> Report:
    plan = QUICK if ctx.quick else FULL
    transport = ctx.transports[0]
    variants = {
        name: await _run_variant(ctx, transport, plan, retention)
        for name, retention in retentions(plan).items()
    }
    report = Report(
        scenario="bursty",
        title="bursty: cold starts saved against container-seconds held, per retention",
        quick=ctx.quick,
        summary=(
            f"{plan.bursts} bursts of {plan.size} activations ({plan.run_ms:g} ms runs), "
            f"{plan.gap_s:g} s of quiet apart, keep_alive_s = {plan.keep_alive_s:g}; simulated "
            f"runtime, {transport} transport. Retentions bridge the gap ({2 * plan.gap_s:g} s)."
        ),
        data={
            "plan": dataclasses.asdict(plan),
            "transport": transport,
            "variants": {name: v.to_json() for name, v in variants.items()},
        },
    )
    report.tables.append(_table(variants))
    return report


async def _run_variant(
    ctx: BenchContext, transport: str, plan: Plan, retention: dict[str, float]
) -> VariantResult:
    settings = _variant_settings(ctx, transport, plan, retention)
    action = Action(name="bursty", max_containers=plan.size)
    starts: Counter[str] = Counter()
    latency = LatencyHistogram()
    async with Stack(settings, actions={action.fqn: action}) as stack:
        controller = stack.controller
        assert controller is not None
        bursts_over = asyncio.Event()
        sampler = asyncio.create_task(_container_seconds(stack, plan, bursts_over))

        async def one() -> None:
            sent_s = time.monotonic()
            result = await controller.invoke(action.name, {"sleep_ms": plan.run_ms})
            latency.record((time.monotonic() - sent_s) * 1000)
            starts[str(result.start)] += 1

        for index in range(plan.bursts):
            await asyncio.gather(*(one() for _ in range(plan.size)))
            if index < plan.bursts - 1:
                await asyncio.sleep(plan.gap_s)
        bursts_over.set()
        held_s = await sampler
        await delete_queues(stack.transport, [settings.queue_name(action.namespace, action.name)])
    ctx.progress.note(f"bursty {retention or 'keep-alive only'}: {dict(starts)}")
    return VariantResult(retention, dict(starts), latency.summary(), round(held_s, 1))


def _variant_settings(
    ctx: BenchContext, transport: str, plan: Plan, retention: dict[str, float]
) -> Settings:
    tag = run_tag()
    return derive(
        ctx.settings_for(transport),
        {
            "runtime": "simulated",
            "queue_template": f"bench-{tag}-{{namespace}}-{{action}}",
            "invoker": {"id": f"burst{tag}", "keep_alive_s": plan.keep_alive_s},
            "retention": retention,
        },
    )


async def _container_seconds(stack: Stack, plan: Plan, bursts_over: asyncio.Event) -> float:
    """Containers up, every interval, until the last has left after the bursts."""
    held_s = 0.0
    tail_s = plan.keep_alive_s + 2 * plan.gap_s + GONE_MARGIN_S
    deadline_s = float("inf")
    while time.monotonic() < deadline_s:
        live = sum(len(i.proxies) for i in stack.invokers)
        if bursts_over.is_set():
            if not live:
                break
            deadline_s = min(deadline_s, time.monotonic() + tail_s)
        held_s += SAMPLE_INTERVAL_S * live
        await asyncio.sleep(SAMPLE_INTERVAL_S)
    return held_s


@dataclasses.dataclass(frozen=True, slots=True)
class VariantResult:
    """One retention's run: how the activations started and what holding cost."""

    retention: dict[str, float]
    starts: dict[str, int]
    """Activations by start (cold, resumed, warm, ...)."""
    latency_ms: dict[str, float]
    container_s: float
    """Containers up, integrated from the first burst until the last left."""

    @property
    def cold_starts(self) -> int:
        return self.starts.get("cold", 0)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _table(variants: dict[str, VariantResult]) -> Table:
    baseline = variants["keep-alive only"]
    rows = []
    for name, v in variants.items():
        rows.append(
            [
                name,
                v.cold_starts,
                ", ".join(f"{k} {n}" for k, n in sorted(v.starts.items())),
                f"{v.latency_ms['p50']:.0f} / {v.latency_ms['max']:.0f}",
                v.container_s,
                baseline.cold_starts - v.cold_starts,
                f"{v.container_s - baseline.container_s:+.1f}",
            ]
        )
    return Table(
        "Per retention",
        [
            "retention",
            "cold starts",
            "starts",
            "latency p50 / max ms",
            "container-s held",
            "cold starts saved",
            "container-s vs keep-alive only",
        ],
        rows,
    )
