"""Drain mode on two memory brokers: an invoker finishes the old broker's work.

The "old" broker holds activations published by a controller that still listens there;
the invoker serves the "new" broker and drains the old one through ``drain_transport``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from embedded import eventually

from broker_sched.config import Settings, load_settings
from broker_sched.errors import ConfigError
from broker_sched.events import Timeline
from broker_sched.invoker.drain import DrainWatch
from broker_sched.invoker.invoker import Invoker
from broker_sched.model import Action, Activation, ActivationResult, decode, encode, now_ms
from broker_sched.runtime.simulated import SimulatedRuntime
from transports.base import Transport
from transports.memory import MemoryBroker, MemoryTransport

ACTION = Action(name="work", memory_mb=256)
OLD_QUEUE = "old-guest-work"
REPLIES = "results-old-controller"


def drain_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "transport": "memory",
        "runtime": "simulated",
        "simulated": {"create_ms": (1.0, 1.0), "run_ms": (5.0, 5.0)},
        "invoker": {"slots": 4, "heartbeat_interval_s": 0.1, "fetch_timeout_s": 0.1},
        "migration": {
            "drain_from": "memory",
            "source_queue_template": "old-{namespace}-{action}",
            "drain_check_interval_s": 0.05,
            "drain_quiet_s": 0.2,
        },
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
async def old() -> AsyncIterator[Transport]:
    async with MemoryTransport(MemoryBroker()) as transport:
        yield transport


@pytest.fixture
async def new() -> AsyncIterator[Transport]:
    async with MemoryTransport(MemoryBroker()) as transport:
        yield transport


@pytest.fixture
async def start_invoker(
    old: Transport, new: Transport
) -> AsyncIterator[Callable[[Settings], Invoker]]:
    """``start_invoker(settings)``: an invoker serving ``new`` and draining ``old``."""
    tasks: list[asyncio.Task[None]] = []
    runtimes: list[SimulatedRuntime] = []

    def start(settings: Settings) -> Invoker:
        runtime = SimulatedRuntime(settings.simulated)
        runtimes.append(runtime)
        invoker = Invoker(
            transport=new,
            runtime=runtime,
            settings=settings,
            actions={ACTION.fqn: ACTION},
            invoker_id="inv",
            timeline=Timeline(),
            drain_transport=old,
        )
        tasks.append(asyncio.create_task(invoker.serve()))
        return invoker

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for runtime in runtimes:
        await runtime.close()


async def publish_old(old: Transport, count: int) -> set[str]:
    ids = set()
    for index in range(count):
        activation = Activation(
            namespace="guest",
            action="work",
            payload={"i": index},
            reply_to=REPLIES,
            deadline_ms=now_ms() + 60_000,
        )
        await old.publish(OLD_QUEUE, encode(activation))
        ids.add(activation.id)
    return ids


def test_a_queue_is_drained_once_it_stayed_empty_for_the_quiet_time() -> None:
    watch = DrainWatch(quiet_s=1.0)
    assert not watch.observe(0, now_s=10.0)
    assert not watch.observe(3, now_s=10.5)
    assert not watch.observe(0, now_s=11.0)
    assert not watch.observe(0, now_s=11.9)
    assert watch.observe(0, now_s=12.0)


def test_no_quiet_time_means_drained_at_the_first_empty_reading() -> None:
    assert DrainWatch(quiet_s=0.0).observe(0, now_s=1.0)


async def test_old_work_runs_and_its_results_go_back_over_the_old_transport(
    old: Transport, start_invoker: Callable[[Settings], Invoker]
) -> None:
    ids = await publish_old(old, 20)
    replies = await old.listen(REPLIES)
    invoker = start_invoker(drain_settings())
    drainer = invoker.drainer
    assert drainer is not None

    results: list[ActivationResult] = []
    while len(results) < len(ids):
        body = await replies.receive(5.0)
        assert body is not None, f"only {len(results)} results arrived"
        results.append(decode(ActivationResult, body))
        if len(results) == 1:
            beat = invoker.heartbeat()
            assert beat.containers == {}, "drain containers do not serve the new queue"
            assert beat.free_slots == 3, "but they take the invoker's room"
    async with asyncio.timeout(5):
        await drainer.finished.wait()
    await replies.close()

    assert {r.activation_id for r in results} == ids
    assert {r.invoker_id for r in results} == {"inv"}
    assert (await old.backlog(OLD_QUEUE, OLD_QUEUE)).total == 0
    kinds = invoker.timeline.counts
    assert kinds["drain_container_created"] == 1
    assert kinds["drain_finished"] == 1
    assert kinds["drain_complete"] == 1
    progress = invoker.timeline.of_kind("drain_progress")
    assert progress[0].detail["remaining"] == 20
    assert progress[-1].detail["remaining"] == 0
    assert drainer.remaining == {ACTION.fqn: 0}
    await eventually(lambda: invoker.reserved_slots == 0, timeout_s=5)
    assert invoker.free_slots == 4


async def test_a_full_invoker_waits_for_room_before_draining(
    old: Transport, start_invoker: Callable[[Settings], Invoker]
) -> None:
    await publish_old(old, 1)
    invoker = start_invoker(drain_settings(invoker={"memory_mb": 128, "fetch_timeout_s": 0.1}))

    await eventually(lambda: invoker.timeline.counts["drain_no_capacity"] > 0, timeout_s=5)

    assert invoker.timeline.counts["drain_container_created"] == 0
    assert (await old.backlog(OLD_QUEUE, OLD_QUEUE)).total == 1


def test_draining_a_transport_into_its_own_queues_is_refused(new: Transport) -> None:
    settings = drain_settings(migration={"drain_from": "memory"})
    with pytest.raises(ConfigError, match="nothing to migrate"):
        Invoker(
            transport=new,
            runtime=SimulatedRuntime(settings.simulated),
            settings=settings,
            actions={ACTION.fqn: ACTION},
        )
