"""The embedded stack with real containers (OS processes) on the memory transport."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from embedded import embedded_settings, eventually, stack_with

from broker_sched.errors import BrokerUnavailable, InvalidPayload, PayloadTooLarge, UnknownAction
from broker_sched.model import Action, Status
from transports.base import dead_letter_queue
from transports.memory import MemoryTransport

pytestmark = pytest.mark.slow

SLEEP = Action(name="sleep", handler="broker_sched.samples:sleep", max_containers=4)
ECHO = Action(name="echo", handler="broker_sched.samples:echo", max_containers=2)
FIB = Action(name="fib", handler="broker_sched.samples:fib", max_containers=2)


def live_containers(stack: object) -> int:
    return sum(len(invoker.proxies) for invoker in stack.invokers)  # type: ignore[attr-defined]


async def test_burst_scales_out_then_back_to_zero() -> None:
    async with stack_with([SLEEP, ECHO, FIB]) as stack:
        controller = stack.controller
        assert controller is not None
        calls = (
            [controller.invoke("sleep", {"ms": 100}) for _ in range(60)]
            + [controller.invoke("echo", {"i": i}) for i in range(20)]
            + [controller.invoke("fib", {"n": 15}) for _ in range(5)]
        )
        results = await asyncio.gather(*calls)

        assert all(r.status is Status.SUCCESS for r in results)
        ids = [r.activation_id for r in results]
        assert len(set(ids)) == len(ids) == 85
        assert stack.timeline.counts["duplicate_result"] == 0
        created = Counter(e.action for e in stack.timeline.of_kind("container_created"))
        assert created["guest/sleep"] > 1, "the burst should have scaled sleep out"
        assert created["guest/sleep"] <= SLEEP.max_containers
        assert Counter(r.start for r in results)[None] == 0

        await eventually(lambda: live_containers(stack) == 0)
        assert stack.timeline.counts["container_removed"] == sum(created.values())


async def test_bad_input_is_rejected_or_reported_and_nothing_is_lost(tmp_path: object) -> None:
    actions = [
        ECHO,
        Action(name="fail", handler="broker_sched.samples:fail"),
        Action(name="hang", handler="broker_sched.samples:hang", timeout_s=0.5),
        Action(name="crash", handler="broker_sched.samples:crash_once"),
    ]
    settings = embedded_settings(max_payload_bytes=4096)
    async with stack_with(actions, settings=settings) as stack:
        controller = stack.controller
        assert controller is not None
        with pytest.raises(UnknownAction, match="nope"):
            await controller.invoke("nope", {})
        with pytest.raises(PayloadTooLarge):
            await controller.invoke("echo", {"blob": "x" * 5000})
        with pytest.raises(InvalidPayload, match="surrogates not allowed"):
            await controller.invoke("echo", {"text": "\ud800"})
        deep: list[object] = []
        for _ in range(1_000):
            deep = [deep]
        with pytest.raises(InvalidPayload, match="depth exceeded"):
            await controller.invoke("echo", deep)  # type: ignore[arg-type]

        await stack.transport.publish(settings.queue_name("guest", "echo"), b"\xff not json")
        echoed = await controller.invoke("echo", {"after": "garbage"})
        assert echoed.status is Status.SUCCESS
        dead = dead_letter_queue(settings.queue_name("guest", "echo"))
        assert (await stack.transport.backlog(dead, dead)).pending == 1

        failed = await controller.invoke("fail", {})
        assert failed.status is Status.ACTION_ERROR
        assert failed.error

        hung = await controller.invoke("hang", {})
        assert hung.status is Status.TIMEOUT

        marker = f"{tmp_path}/crashed-once"
        crashed = await controller.invoke("crash", {"marker": marker}, timeout_s=30)
        assert crashed.status is Status.SUCCESS
        assert crashed.container_id


async def test_broker_outage_fails_fast_and_recovers() -> None:
    async with stack_with([ECHO]) as stack:
        controller = stack.controller
        assert controller is not None
        assert isinstance(stack.transport, MemoryTransport)
        assert (await controller.invoke("echo", {"before": 1})).status is Status.SUCCESS

        stack.transport.broker.down = True
        async with asyncio.timeout(2):
            with pytest.raises(BrokerUnavailable):
                await controller.invoke("echo", {"during": 1})
        stack.transport.broker.down = False

        assert (await controller.invoke("echo", {"after": 1})).status is Status.SUCCESS
