"""Invoker-scoped consumption on every transport: one member per invoker and action,
shared by the invoker's containers of that action.

An invoker given three containers of one action consumes it through one group member;
on Kafka the queue has one partition, so three containers working at once show that the
partition count caps members (invokers), no longer containers.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from broker_sched.config import Settings
from broker_sched.invoker.invoker import Invoker
from broker_sched.model import (
    Action,
    Activation,
    ActivationResult,
    ContainerRequest,
    decode,
    encode,
    new_id,
    now_ms,
)
from broker_sched.runtime.simulated import SimulatedRuntime
from transports.registry import transport_from_settings

CONTAINERS = 3
ACTIVATIONS = 12
RUN_MS = 300.0


async def test_an_invokers_containers_share_one_member(
    transport_name: str, broker_settings: Callable[..., Settings]
) -> None:
    action = Action(name=f"feed{new_id()[-8:]}")
    settings = broker_settings(
        transport_name,
        runtime="simulated",
        invoker={"consumption": "invoker", "keep_alive_s": 60.0, "pause_grace_s": 60.0},
        simulated={"create_ms": (0.0, 0.0), "run_ms": (RUN_MS, RUN_MS)},
    )
    queue = settings.queue_name(action.namespace, action.name)
    replies = f"replies-{new_id()[-8:]}"
    runtime = SimulatedRuntime(settings.simulated)
    async with transport_from_settings(settings) as transport:
        await transport.declare(queue)
        invoker = Invoker(
            transport=transport, runtime=runtime, settings=settings, actions={action.fqn: action}
        )
        listener = await transport.listen(replies)
        results: list[ActivationResult] = []
        try:
            async with anyio.create_task_group() as running:
                running.start_soon(invoker.serve)
                await anyio.sleep(0.1)
                request = ContainerRequest(
                    kind="create", namespace=action.namespace, action=action.name, memory_mb=128
                )
                for _ in range(CONTAINERS):
                    reply = await invoker.create_container(request)
                    assert reply.ok, reply.error
                for index in range(ACTIVATIONS):
                    activation = Activation(
                        namespace=action.namespace,
                        action=action.name,
                        payload={"i": index},
                        reply_to=replies,
                        deadline_ms=now_ms() + 120_000,
                    )
                    await transport.publish(queue, encode(activation))
                with anyio.fail_after(90):
                    while len(results) < ACTIVATIONS:
                        body = await listener.receive(1.0)
                        if body is not None:
                            results.append(decode(ActivationResult, body))
                assert invoker.feeds is not None
                assert list(invoker.feeds) == [queue]
                assert invoker.feeds[queue].containers == CONTAINERS
                running.cancel_scope.cancel()
        finally:
            await listener.close()
            await transport.delete(queue)
            await runtime.close()
    assert all(result.ok for result in results)
    assert sorted(result.result["i"] for result in results) == list(range(ACTIVATIONS))  # type: ignore[index]
    assert len({result.container_id for result in results}) == CONTAINERS
