"""full-cluster: more actions than room, on default settings — nothing may hang.

100 actions of 256 MB on one invoker with the default slots and memory, each invoked
once in turn, then at random from 20 callers, with a 15 s invocation timeout and every
other setting at its default (the process runtime: real cold starts). Only 20
containers fit, so most first activations find the cluster full. What the scheduler may
do: evict the least recently used idle container of another action, or reject at once
with "429 no capacity". What it must not do is leave an invocation waiting until its
timeout because nothing could ever serve it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass

from broker_sched.bench.cell import delete_queues
from broker_sched.bench.context import BenchContext
from broker_sched.bench.histogram import LatencyHistogram
from broker_sched.bench.report import Report, Table, Target, at_most
from broker_sched.bench.settings import derive, run_tag
from broker_sched.errors import BrokerSchedError, InvocationTimeout, NoCapacity
from broker_sched.events import Timeline
from broker_sched.model import Action
from broker_sched.scheduler.controller import Controller
from broker_sched.stack import Stack

ACTIONS = 100
CALLERS = 20
RANDOM_CALLS = 200
QUICK_RANDOM_CALLS = 40
TIMEOUT_S = 15.0
ANSWER_GOAL_S = 1.0
"""Every invocation runs (its queue wait) or is rejected within this."""
SEED = 7


async def run(ctx: BenchContext) -> Report:
    results = {t: await _run_transport(ctx, t) for t in ctx.transports}
    report = Report(
        scenario="full-cluster",
        title="full-cluster: 100 actions, room for 20 containers, default settings",
        quick=ctx.quick,
        summary=(
            f"{ACTIONS} actions of 256 MB on one invoker with default slots and memory; "
            f"each invoked once in turn, then {RANDOM_CALLS} calls at random from "
            f"{CALLERS} callers; {TIMEOUT_S:g} s invocation timeout; process runtime."
        ),
        data={"transports": {t: asdict(result) for t, result in results.items()}},
    )
    report.tables.append(_table(results))
    report.targets += [target for t, r in results.items() for target in _targets(t, r)]
    return report


@dataclass(frozen=True, slots=True)
class FullClusterResult:
    """How a full cluster answered on one transport: every call's outcome, and how long
    the served waited and the rejected were kept."""

    outcomes: dict[str, int]
    """Calls by outcome: a result's status, ``timeout``, ``rejected: no capacity``, …"""
    queue_wait_ms: dict[str, float]
    rejected_after_ms: dict[str, float]
    slowest_answer_s: float
    """The longest wait for a run to start, a rejection or a timeout."""
    evictions: int
    containers_created: int


class _Outcomes:
    """Each call's outcome, how long the served waited for their run to start, and how
    long the rejected were kept."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.waited = LatencyHistogram()
        self.rejected_after = LatencyHistogram()
        self.slowest_s = 0.0

    async def call(self, controller: Controller, action: Action) -> None:
        started_s = time.monotonic()
        try:
            result = await controller.invoke(action.name, {"n": 1}, timeout_s=TIMEOUT_S)
        except NoCapacity:
            self.counts["rejected: no capacity"] += 1
            self.rejected_after.record((time.monotonic() - started_s) * 1000)
        except InvocationTimeout:
            self.counts["timeout"] += 1
            self.slowest_s = max(self.slowest_s, time.monotonic() - started_s)
        except BrokerSchedError as exc:
            self.counts[type(exc).__name__] += 1
        else:
            self.counts[str(result.status)] += 1
            self.waited.record(result.wait_ms)
            self.slowest_s = max(self.slowest_s, result.wait_ms / 1000)

    def result(self, timeline: Timeline) -> FullClusterResult:
        return FullClusterResult(
            outcomes=dict(self.counts),
            queue_wait_ms=self.waited.summary(),
            rejected_after_ms=self.rejected_after.summary(),
            slowest_answer_s=round(self.slowest_s, 3),
            evictions=timeline.counts["container_evicted"],
            containers_created=timeline.counts["container_created"],
        )


async def _run_transport(ctx: BenchContext, transport: str) -> FullClusterResult:
    tag = run_tag()
    settings = derive(
        ctx.settings_for(transport),
        {
            "queue_template": f"bench-{tag}-{{namespace}}-{{action}}",
            "invoker": {"id": f"full{tag}"},
            "invocation_timeout_s": TIMEOUT_S,
        },
    )
    actions = [Action(name=f"f{i:03d}", memory_mb=256) for i in range(ACTIONS)]
    timeline = Timeline()
    outcomes = _Outcomes()
    rng = random.Random(SEED)
    async with Stack(settings, actions={a.fqn: a for a in actions}, timeline=timeline) as stack:
        controller = stack.controller
        assert controller is not None
        for action in actions:
            await outcomes.call(controller, action)
        gate = asyncio.Semaphore(CALLERS)

        async def random_call() -> None:
            async with gate:
                await outcomes.call(controller, rng.choice(actions))

        calls = QUICK_RANDOM_CALLS if ctx.quick else RANDOM_CALLS
        await asyncio.gather(*(random_call() for _ in range(calls)))
        queues = [settings.queue_name(a.namespace, a.name) for a in actions]
        queues += [invoker.control_queue for invoker in stack.invokers]
        await delete_queues(stack.transport, queues)
    ctx.progress.note(f"full-cluster {transport}: {dict(outcomes.counts)}")
    return outcomes.result(timeline)


def _table(results: dict[str, FullClusterResult]) -> Table:
    return Table(
        "Outcomes",
        [
            "transport",
            "outcomes",
            "queue wait p99 / max ms",
            "rejected within p99 / max ms",
            "slowest answer s",
            "evictions",
            "created",
        ],
        [
            [
                t,
                ", ".join(f"{k} {v}" for k, v in sorted(r.outcomes.items())),
                f"{r.queue_wait_ms['p99']:.0f} / {r.queue_wait_ms['max']:.0f}",
                f"{r.rejected_after_ms['p99']:.1f} / {r.rejected_after_ms['max']:.1f}",
                r.slowest_answer_s,
                r.evictions,
                r.containers_created,
            ]
            for t, r in results.items()
        ],
    )


def _targets(transport: str, result: FullClusterResult) -> list[Target]:
    return [
        at_most(
            f"{transport}: invocations that waited out their timeout",
            result.outcomes.get("timeout", 0),
            0,
            "an activation sat in a queue nothing could serve",
        ),
        at_most(
            f"{transport}: slowest run start or rejection, s",
            result.slowest_answer_s,
            ANSWER_GOAL_S,
            "a first activation waited for an eviction and a cold start",
        ),
    ]
