"""Shutdown: a stack under load, cancelled, ends every task it started and loses no work.

The stack runs on the transport under test with several containers busy, callers
publishing, and replies in flight when its scope is cancelled. Leaving must take a
bounded time; afterwards no task of the scheduler is left running, none was destroyed
while pending, and every activation published was either answered (the reply reached
the broker before the ack) or is still in its queue for the next consumer.
"""

from __future__ import annotations

import asyncio
import gc
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import broker_sched
from broker_sched.config import Settings
from broker_sched.errors import Throttled
from broker_sched.model import Action, Activation, ActivationResult, decode
from broker_sched.stack import Stack
from broker_sched.topology import results_channel
from transports.base import Transport

ANSWERED_BEFORE_CANCEL = 20
WARM_UP_S = 30.0
"""Bounds the wait for the first answers (a Kafka group's first rebalance takes seconds)."""
LOAD_S = 0.5
"""Load after the first answers, so containers are busy and scaling when cancelled."""
SHUTDOWN_WITHIN_S = 15.0
"""Cancel to the stack's exit: proxies leave their groups and containers go, in parallel."""
COLLECT_S = 30.0
"""How long the work left in the queue may take to come back (a Kafka rejoin, a claim)."""
CALLERS = 8
SCHEDULER_SOURCE = str(Path(broker_sched.__file__).parent)


@pytest.fixture
async def loop_complaints() -> AsyncIterator[list[str]]:
    """What the event loop reports to its exception handler during the test: a task
    destroyed while pending, an exception never retrieved."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    complaints: list[str] = []
    loop.set_exception_handler(lambda _, context: complaints.append(str(context["message"])))
    yield complaints
    gc.collect()
    loop.set_exception_handler(previous)


def scheduler_tasks() -> set[asyncio.Task[Any]]:
    """Unfinished tasks running the scheduler's own code."""
    return {
        task
        for task in asyncio.all_tasks()
        if not task.done() and task.get_coro().cr_code.co_filename.startswith(SCHEDULER_SOURCE)  # type: ignore[union-attr]
    }


async def test_a_cancelled_stack_under_load_ends_every_task_and_loses_no_work(
    make_transport: Callable[..., Any],
    broker_settings: Callable[..., Settings],
    transport_name: str,
    loop_complaints: list[str],
) -> None:
    action = Action(name="work", concurrency=2, max_containers=4)
    settings = broker_settings(
        transport_name,
        runtime="simulated",
        queue_template=f"shut-{uuid.uuid4().hex[:10]}-{{namespace}}-{{action}}",
        invoker={"slots": 4, "heartbeat_interval_s": 0.2, "fetch_timeout_s": 0.2},
        simulated={"create_ms": (10.0, 10.0), "run_ms": (20.0, 60.0)},
    )
    transport: Transport = await make_transport(transport_name)
    queue = settings.queue_name(action.namespace, action.name)
    published: set[str] = set()
    answered: set[str] = set()
    before = scheduler_tasks()

    with anyio.CancelScope() as running:
        async with Stack(settings, actions={action.fqn: action}, transport=transport) as stack:
            controller = stack.controller
            assert controller is not None
            replies = await transport.listen(results_channel(controller.id))
            warm = anyio.Event()

            def count(_: ActivationResult) -> None:
                if len(controller.results) >= ANSWERED_BEFORE_CANCEL:
                    warm.set()

            controller.result_listeners.append(count)

            async def call() -> None:
                while True:
                    try:
                        published.add(await controller.invoke(action.name, {}, blocking=False))
                    except Throttled:
                        await anyio.sleep(0.05)
                    await anyio.sleep(0.005)

            async with anyio.create_task_group() as callers:
                for _ in range(CALLERS):
                    callers.start_soon(call)
                with anyio.fail_after(WARM_UP_S):
                    await warm.wait()
                await anyio.sleep(LOAD_S)
                running.cancel()
                cancelled_s = anyio.current_time()
    took_s = anyio.current_time() - cancelled_s

    assert took_s < SHUTDOWN_WITHIN_S, f"the stack took {took_s:.1f} s to shut down"
    assert scheduler_tasks() <= before, "tasks of the scheduler outlived its stack"
    assert published, "no load reached the stack"

    async with replies:
        while (body := await replies.receive(1.0)) is not None:
            answered.add(decode(ActivationResult, body).activation_id)
    waiting: set[str] = set()
    async with await transport.subscribe(queue, queue, "after-shutdown") as after:
        with anyio.move_on_after(COLLECT_S):
            while not published <= answered | waiting:
                for delivery in await after.fetch(64, 0.5):
                    waiting.add(decode(Activation, delivery.body).id)
                    await delivery.ack()
    lost = published - answered - waiting
    assert not lost, f"{len(lost)} of {len(published)} activations neither answered nor queued"
    assert answered, "nothing ran before the shutdown"

    gc.collect()
    await anyio.lowlevel.checkpoint()
    assert not [c for c in loop_complaints if "Task" in c], loop_complaints
