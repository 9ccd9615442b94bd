"""Three controllers against one: what sharing a cluster costs in containers and CPU.

One busy action, open-loop load spread round robin over ``n`` controllers (this
process, each with its own broker connection, as separate controllers have), two
invoker processes beside them (``run --role invoker --workers 2``). With one owner per
action the containers made for the load should be what one controller makes
(target: peak ≤ 1.1 times), and the controllers' CPU per 1,000 activations, summed, about
one controller's (≤ 1.15 times): every controller publishes and listens, only the owner
decides. CPU is this process's (all its controllers and the load), so the two runs are
compared on the same total.

    python -m broker_sched.bench.controllers --transport redis [--rate 60 --seconds 20]

With ``--idle-actions N`` it times instead what an owner's tick reads: the backlog of N
declared queues (1 % of them holding a message) in one batched ``backlogs()`` call, the
median of five (target: ≤ 100 ms at 10,000).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import statistics
import sys
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from broker_sched.bench.cell import delete_queues
from broker_sched.bench.chaos import QUICK as CHAOS_PLAN
from broker_sched.bench.chaos import overrides
from broker_sched.bench.many_topics import _timed_all
from broker_sched.bench.processes import child_environment
from broker_sched.bench.settings import run_tag
from broker_sched.config import Settings, load_settings
from broker_sched.errors import BrokerSchedError
from broker_sched.model import Action
from broker_sched.scheduler.controller import Controller
from broker_sched.stack import Stack
from broker_sched.topology import consumer_group
from transports.memory import MemoryBroker, MemoryTransport
from transports.registry import transport_from_settings

INVOKER_PROCESSES = 2
RUN_MS = 100
STARTUP_S = 60.0
DRAIN_S = 60.0
SAMPLE_S = 0.2
IDLE_BUSY_EVERY = 100
IDLE_ROUNDS = 5


@dataclass(frozen=True, slots=True)
class Run:
    controllers: int
    accepted: int
    completed: int
    peak_containers: int
    cpu_s_per_1k: float


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(transport: str, controllers: int, rate_per_s: float, seconds: float) -> Run:
    tag = run_tag()
    action = Action(
        name="busy",
        namespace=f"ctl-{tag}",
        handler="broker_sched.bench.chaos_action:tagged_sleep",
        max_containers=64,
    )
    values = overrides(transport, f"ctl-{tag}-0", action, CHAOS_PLAN)
    values["kafka"] |= {"default_partitions": 64}
    base = load_settings(None, **values)
    if transport == "memory":
        return await _in_process(base, values, controllers, action, rate_per_s, seconds)
    command = [sys.executable, "-m", "broker_sched.cli", "run", "--role", "invoker"]
    command += ["--workers", str(INVOKER_PROCESSES), "--api", "off"]
    invokers = await asyncio.create_subprocess_exec(*command, env=child_environment(base))
    try:
        async with AsyncExitStack() as stacks:
            fronts: list[Controller] = []
            for index in range(controllers):
                settings = load_settings(None, **(values | {"controller_id": f"ctl-{tag}-{index}"}))
                stack = await stacks.enter_async_context(Stack(settings, role="controller"))
                assert stack.controller is not None
                fronts.append(stack.controller)
            async with asyncio.timeout(STARTUP_S):
                while any(len(f.cluster.live()) < INVOKER_PROCESSES for f in fronts):
                    if invokers.returncode is not None:
                        raise BrokerSchedError(f"invoker processes exited ({invokers.returncode})")
                    await asyncio.sleep(0.1)
                await asyncio.sleep(3 * base.scheduler.lease_ttl_s)  # shards settle
            return await _load(fronts, action, rate_per_s, seconds)
    finally:
        if invokers.returncode is None:
            invokers.send_signal(signal.SIGTERM)
        await invokers.wait()


async def _in_process(
    base: Settings,
    values: dict[str, Any],
    controllers: int,
    action: Action,
    rate_per_s: float,
    seconds: float,
) -> Run:
    """The memory transport: every component in this process on one broker object, so
    the CPU is the invokers' too (the same in both runs)."""
    broker = MemoryBroker()
    async with AsyncExitStack() as stacks:
        await stacks.enter_async_context(
            Stack(
                base, role="invoker", invokers=INVOKER_PROCESSES, transport=MemoryTransport(broker)
            )
        )
        fronts: list[Controller] = []
        for index in range(controllers):
            settings = load_settings(None, **(values | {"controller_id": f"mem-{index}"}))
            stack = await stacks.enter_async_context(
                Stack(settings, role="controller", transport=MemoryTransport(broker))
            )
            assert stack.controller is not None
            fronts.append(stack.controller)
        async with asyncio.timeout(STARTUP_S):
            while any(len(f.cluster.live()) < INVOKER_PROCESSES for f in fronts):  # noqa: ASYNC110 - heartbeats of other stacks
                await asyncio.sleep(0.1)
            await asyncio.sleep(3 * base.scheduler.lease_ttl_s)
        return await _load(fronts, action, rate_per_s, seconds)


async def _load(fronts: list[Controller], action: Action, rate_per_s: float, seconds: float) -> Run:
    accepted: list[tuple[Controller, str]] = []
    peak = 0
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            seen = fronts[0].cluster
            containers = sum(b.containers.get(action.fqn, 0) for b in seen.live())
            peak = max(peak, containers)
            await asyncio.sleep(SAMPLE_S)

    sampler = asyncio.create_task(sample())
    cpu_start_s = _cpu_s()
    start_s = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start_s) < seconds:
        while sent < elapsed * rate_per_s:
            front = fronts[sent % len(fronts)]
            accepted.append((front, await front.invoke(action.fqn, {"ms": RUN_MS}, blocking=False)))
            sent += 1
        await asyncio.sleep(0.005)
    deadline_s = time.monotonic() + DRAIN_S
    while time.monotonic() < deadline_s and not all(a in f.results for f, a in accepted):  # noqa: ASYNC110 - results arrive on several controllers
        await asyncio.sleep(0.1)
    cpu_s = _cpu_s() - cpu_start_s
    done.set()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    completed = sum(a in f.results for f, a in accepted)
    return Run(
        controllers=len(fronts),
        accepted=len(accepted),
        completed=completed,
        peak_containers=peak,
        cpu_s_per_1k=cpu_s / max(1, completed) * 1000,
    )


async def idle_tick(transport: str, actions: int) -> None:
    """Print the median time of one batched backlog read over ``actions`` queues."""
    settings = load_settings(None, transport=transport)
    queues = [f"idle-{run_tag()}-{index:05d}" for index in range(actions)]
    pairs = [(queue, consumer_group(queue)) for queue in queues]
    async with transport_from_settings(settings) as broker:
        try:
            declare_s = await _timed_all(queues, broker.declare)
            await _timed_all(queues[::IDLE_BUSY_EVERY], lambda q: broker.publish(q, b"{}"))
            ticks_ms = []
            for _ in range(IDLE_ROUNDS):
                started_s = time.monotonic()
                await broker.backlogs(pairs)
                ticks_ms.append((time.monotonic() - started_s) * 1000)
        finally:
            await delete_queues(broker, queues)
    print(
        f"{transport}: {actions} actions: backlog tick {statistics.median(ticks_ms):.1f} ms "
        f"(median of {IDLE_ROUNDS}; target <= 100 ms), declared in {declare_s:.1f} s"
    )


async def main(transport: str, rate_per_s: float, seconds: float) -> None:
    one = await measure(transport, 1, rate_per_s, seconds)
    three = await measure(transport, 3, rate_per_s, seconds)
    for run in (one, three):
        print(
            f"{transport}: {run.controllers} controller(s): {run.completed}/{run.accepted} "
            f"ran, peak containers {run.peak_containers}, "
            f"CPU {run.cpu_s_per_1k:.2f} s per 1,000 activations"
        )
    containers = three.peak_containers / max(1, one.peak_containers)
    cpu = three.cpu_s_per_1k / one.cpu_s_per_1k
    print(
        f"{transport}: 3 vs 1 controllers: peak containers {containers:.2f}x (target <= 1.1x), "
        f"CPU per 1,000 {cpu:.2f}x (target <= 1.15x)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", default="redis")
    parser.add_argument("--rate", type=float, default=60.0, help="invocations per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--idle-actions", type=int, default=0, help="time the idle tick")
    args = parser.parse_args()
    if args.idle_actions:
        asyncio.run(idle_tick(args.transport, args.idle_actions))
    else:
        asyncio.run(main(args.transport, args.rate, args.seconds))
