"""The `sharding` baseline's invoker evicts the least recently used idle container.

This is the mechanism behind the seed-table collapse, so it is pinned down here with
the memory transport and a simulated runtime whose costs are a few milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from broker_sched.config import load_settings
from broker_sched.events import Timeline
from broker_sched.invoker.leases import Leases
from broker_sched.invoker.push_pool import PushPool
from broker_sched.model import (
    Action,
    Activation,
    ActivationResult,
    Start,
    Status,
    decode,
    encode,
    now_ms,
)
from broker_sched.runtime.simulated import SimulatedRuntime
from transports.base import Listener
from transports.memory import MemoryTransport

WORK_QUEUE = "work-i0"
REPLIES = "replies"
ACTIONS = {a.fqn: a for a in (Action(name="a"), Action(name="b"), Action(name="c"))}


@pytest.fixture
async def pool() -> AsyncIterator[PushPool]:
    settings = load_settings(
        transport="memory",
        policy="sharding",
        runtime="simulated",
        invoker={"slots": 2, "pause_grace_s": 60.0, "keep_alive_s": 60.0},
        simulated={"create_ms": (5.0, 5.0), "run_ms": (1.0, 1.0), "remove_ms": (1.0, 1.0)},
    )
    runtime = SimulatedRuntime(settings.simulated)
    async with MemoryTransport() as transport:
        push_pool = PushPool(
            transport=transport,
            runtime=runtime,
            settings=settings,
            actions=ACTIONS,
            invoker_id="i0",
            work_queue=WORK_QUEUE,
            timeline=Timeline(),
            leases=Leases(1.0),
        )
        serving = asyncio.create_task(push_pool.serve())
        yield push_pool
        serving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await serving
        await runtime.close()


@pytest.fixture
async def replies(pool: PushPool) -> AsyncIterator[Listener]:
    listener = await pool.transport.listen(REPLIES)
    yield listener
    await listener.close()


async def run(pool: PushPool, replies: Listener, name: str) -> ActivationResult:
    activation = Activation(
        namespace="guest", action=name, reply_to=REPLIES, deadline_ms=now_ms() + 10_000
    )
    await pool.transport.publish(WORK_QUEUE, encode(activation))
    body = await replies.receive(5.0)
    assert body is not None
    result = decode(ActivationResult, body)
    assert result.activation_id == activation.id
    return result


async def test_a_full_pool_evicts_the_least_recently_used_idle_container(
    pool: PushPool, replies: Listener
) -> None:
    assert (await run(pool, replies, "a")).start is Start.COLD
    assert (await run(pool, replies, "b")).start is Start.COLD
    assert (await run(pool, replies, "a")).start is Start.WARM

    evicting = await run(pool, replies, "c")

    assert evicting.start is Start.COLD
    evictions = pool.timeline.of_kind("container_evicted")
    assert [(e.action, e.detail["by"]) for e in evictions] == [("guest/b", "guest/c")]
    assert pool.containers_by_action() == {"guest/a": 1, "guest/c": 1}
    assert (await run(pool, replies, "a")).start is Start.WARM
    assert (await run(pool, replies, "b")).start is Start.COLD
    assert pool.timeline.counts["container_evicted"] == 2


async def test_a_pool_with_room_keeps_every_action_warm(pool: PushPool, replies: Listener) -> None:
    for name in ("a", "b", "a", "b", "a"):
        await run(pool, replies, name)
    assert pool.timeline.counts["container_evicted"] == 0
    assert pool.timeline.counts["container_created"] == 2


async def test_an_activation_past_its_deadline_is_answered_without_a_container(
    pool: PushPool, replies: Listener
) -> None:
    late = Activation(namespace="guest", action="a", reply_to=REPLIES, deadline_ms=now_ms() - 1)
    await pool.transport.publish(WORK_QUEUE, encode(late))
    body = await replies.receive(5.0)
    assert body is not None
    result = decode(ActivationResult, body)
    assert (result.status, result.error) == (Status.TIMEOUT, "deadline passed while queued")
    assert pool.timeline.counts["container_created"] == 0
