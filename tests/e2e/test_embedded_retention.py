"""Retention end to end: after a burst the last container stays, the others leave."""

from __future__ import annotations

import asyncio

import pytest
from embedded import embedded_settings, eventually, stack_with

from broker_sched.model import Action, Start

pytestmark = pytest.mark.slow

BURSTY = Action(name="bursty", max_containers=4)


def live(stack: object) -> int:
    return sum(len(invoker.proxies) for invoker in stack.invokers)  # type: ignore[attr-defined]


async def test_the_last_container_outlives_the_keep_alive_and_serves_the_next_burst() -> None:
    settings = embedded_settings(
        runtime="simulated",
        simulated={"create_ms": (200.0, 200.0)},
        invoker={"keep_alive_s": 0.5, "pause_grace_s": 10.0},
        retention={"last_container_retention_s": 30.0},
    )
    async with stack_with([BURSTY], settings=settings) as stack:
        controller = stack.controller
        assert controller is not None
        burst = [controller.invoke("bursty", {"sleep_ms": 400}) for _ in range(8)]
        await asyncio.gather(*burst)
        assert live(stack) > 1
        await eventually(lambda: live(stack) == 1)
        await asyncio.sleep(1.0)
        assert live(stack) == 1, "the last container stays past the keep-alive"
        result = await controller.invoke("bursty", {"sleep_ms": 1})
        assert result.start is Start.WARM


async def test_a_scale_down_delay_keeps_every_container_until_the_quiet_lasts() -> None:
    settings = embedded_settings(
        runtime="simulated",
        simulated={"create_ms": (200.0, 200.0)},
        invoker={"keep_alive_s": 0.3, "pause_grace_s": 10.0},
        retention={"scale_down_delay_s": 1.5},
    )
    async with stack_with([BURSTY], settings=settings) as stack:
        controller = stack.controller
        assert controller is not None
        await asyncio.gather(*(controller.invoke("bursty", {"sleep_ms": 400}) for _ in range(8)))
        created = live(stack)
        assert created > 1
        await asyncio.sleep(0.8)
        assert live(stack) == created, "nobody leaves within the delay"
        await eventually(lambda: live(stack) == 0)


async def test_a_learned_keep_alive_keeps_a_regular_actions_container_between_calls() -> None:
    """Calls 1.5 s apart with a fixed keep-alive of 0.3 s: each is a cold start until
    the invoker has learned the gaps; then the container stays across them, and still
    leaves once the calls stop (scale to zero at the end of the learned window)."""
    settings = embedded_settings(
        runtime="simulated",
        simulated={"create_ms": (100.0, 100.0)},
        invoker={"keep_alive_s": 0.3, "pause_grace_s": 10.0},
        keep_alive={"policy": "learned", "min_samples": 3, "first_bin_s": 0.1},
    )
    async with stack_with([Action(name="regular")], settings=settings) as stack:
        controller = stack.controller
        assert controller is not None
        starts = []
        for _ in range(10):
            result = await controller.invoke("regular", {"sleep_ms": 1})
            starts.append(result.start)
            await asyncio.sleep(1.5)
        assert starts[0] is Start.COLD
        assert starts[-3:] == [Start.WARM] * 3, starts
        await eventually(lambda: live(stack) == 0, timeout_s=30.0)
