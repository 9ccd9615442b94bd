"""Many actions and users on the simulated runtime: the acs policy keeps containers warm."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from embedded import embedded_settings, stack_with

from broker_sched.model import Action, Start, Status

pytestmark = pytest.mark.slow


async def test_100_actions_100_closed_loop_users() -> None:
    actions = [Action(name=f"a{i:03d}", max_containers=5) for i in range(100)]
    settings = embedded_settings(
        runtime="simulated",
        invoker={"slots": 20, "keep_alive_s": 30.0, "pause_grace_s": 5.0},
        simulated={"create_ms": (300.0, 600.0), "run_ms": (2.0, 2.0)},
    )
    rng = random.Random(7)
    starts: Counter[Start | None] = Counter()
    statuses: Counter[Status] = Counter()

    async with stack_with(actions, settings=settings, invokers=10) as stack:
        controller = stack.controller
        assert controller is not None

        async def user(index: int) -> None:
            own = actions[index]
            for _ in range(20):
                target = own if rng.random() < 0.8 else rng.choice(actions)
                result = await controller.invoke(target.name, {"user": index}, timeout_s=60)
                starts[result.start] += 1
                statuses[result.status] += 1

        await asyncio.gather(*(user(i) for i in range(100)))

    total = sum(statuses.values())
    assert total == 2000
    assert statuses[Status.SUCCESS] == total
    assert starts[Start.COLD] < total // 5, starts
