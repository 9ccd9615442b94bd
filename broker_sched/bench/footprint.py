"""Memory per warm container proxy and per idle action queue, at 1,000 actions.

One process on the memory transport with the simulated runtime: every action gets one
activation, which leaves one warm container (and its proxy, subscription and the
controller's per-action state) per action; once every proxy is asked to leave (what
``keep_alive_s`` does to an idle one), what remains per action is its idle queue and
the controller's bookkeeping. Finished results
and timeline events are cleared before each count: they grow per activation, not per
action. ``tracemalloc``
counts Python allocations against a baseline taken before the first invocation, so the
figures are this project's objects, not the interpreter's. On a network broker the queue
itself lives in the broker; here it is in the process and counted.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from dataclasses import dataclass

from broker_sched.bench.settings import derive, run_tag
from broker_sched.config import Settings
from broker_sched.stack import Stack

ACTIONS = 1_000
KEEP_ALIVE_S = 600.0
"""Longer than the measurement: no container retires before it is counted."""
RETIRE_TIMEOUT_S = 30.0
INVOKE_CONCURRENCY = 50


@dataclass(frozen=True, slots=True)
class Footprint:
    """Bytes per action at ``actions`` actions, warm and once idle."""

    actions: int
    warm_proxies: int
    """Counted rather than assumed: the per-proxy figure divides by it."""
    bytes_per_warm_proxy: float | None
    """None when no proxy was left warm to divide by."""
    bytes_per_idle_queue: float


async def measure_footprint(base: Settings, actions: int = ACTIONS) -> Footprint:
    tag = run_tag()
    names = [f"fp-{tag}-{index}" for index in range(actions)]
    settings = derive(
        base,
        {
            "transport": "memory",
            "runtime": "simulated",
            "actions": [{"name": name, "handler": "noop", "max_containers": 1} for name in names],
            "simulated": {
                "create_ms": [0.0, 0.0],
                "run_ms": [0.0, 0.0],
                "pause_ms": [0.0, 0.0],
                "resume_ms": [0.0, 0.0],
                "remove_ms": [0.0, 0.0],
            },
            "invoker": {
                "slots": actions + 10,
                "memory_mb": (actions + 10) * 256,
                "pause_grace_s": 60.0,
                "keep_alive_s": KEEP_ALIVE_S,
            },
        },
    )
    tracemalloc.start()
    try:
        async with Stack(settings) as stack:
            controller = stack.controller
            assert controller is not None
            baseline = _allocated()
            gate = asyncio.Semaphore(INVOKE_CONCURRENCY)

            async def once(name: str) -> None:
                async with gate:
                    await controller.invoke(name, None, timeout_s=30.0)

            await asyncio.gather(*(once(name) for name in names))
            proxies = sum(len(invoker.proxies) for invoker in stack.invokers)
            warm = _allocated(stack)
            for invoker in stack.invokers:
                for proxy in invoker.proxies:
                    proxy.stop()
            deadline = time.monotonic() + RETIRE_TIMEOUT_S
            while any(invoker.proxies for invoker in stack.invokers):
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            idle = _allocated(stack)
    finally:
        tracemalloc.stop()
    return Footprint(
        actions=actions,
        warm_proxies=proxies,
        bytes_per_warm_proxy=(warm - idle) / proxies if proxies else None,
        bytes_per_idle_queue=(idle - baseline) / actions,
    )


def _allocated(stack: Stack | None = None) -> int:
    """Bytes held now, leaving out what grows per activation rather than per action:
    the controller's finished results (kept for the API) and the timeline."""
    if stack is not None:
        assert stack.controller is not None
        stack.controller.results.clear()
        stack.timeline.events.clear()
    gc.collect()
    current, _ = tracemalloc.get_traced_memory()
    return current
