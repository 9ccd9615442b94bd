"""The prewarm pool end to end: a container request takes a stem cell (start = prewarm)."""

from __future__ import annotations

import pytest
from embedded import embedded_settings, eventually, stack_with

from broker_sched.errors import ConfigError
from broker_sched.metrics import controller_families, exposition
from broker_sched.model import Action, Start, Status
from broker_sched.runtime.simulated import SimulatedRuntime
from broker_sched.stack import Stack

pytestmark = pytest.mark.slow

POOL = {"kind": "python", "memory_mb": 256, "initial_count": 1}


def pooled(runtime: str, **simulated: object) -> dict[str, object]:
    pool = POOL
    return {
        "runtime": runtime,
        "prewarm": {"pools": [pool], "check_interval_s": 0.1},
        "simulated": {"create_ms": (400.0, 400.0), "init_ms": (20.0, 20.0), **simulated},
    }


async def ready_cells(stack: Stack, count: int) -> None:
    await eventually(lambda: sum(i.prewarm.ready("python:256") for i in stack.invokers) == count)


@pytest.mark.parametrize("runtime", ["simulated", "process"])
async def test_a_container_request_takes_a_stem_cell_and_the_pool_refills(runtime: str) -> None:
    action = Action(name="pooled", handler="broker_sched.samples:echo")
    settings = embedded_settings(**pooled(runtime))
    async with stack_with([action], settings=settings) as stack:
        assert stack.controller is not None
        await ready_cells(stack, 1)
        first = await stack.controller.invoke("pooled", {"n": 1})
        assert first.status is Status.SUCCESS
        assert first.start is Start.PREWARM
        assert first.init_ms > 0
        if runtime == "simulated":
            assert first.init_ms == pytest.approx(20.0)
        second = await stack.controller.invoke("pooled", {"n": 2})
        assert second.start is Start.WARM
        await ready_cells(stack, 1)
        invoker = stack.invokers[0]
        assert invoker.prewarm.hits["python:256"] == 1
        created = [e for e in stack.timeline.events if e.kind == "container_created"]
        assert [e.detail["start"] for e in created] == ["prewarm"]


async def test_an_empty_pool_counts_a_miss_and_metrics_show_the_pool() -> None:
    big = Action(name="big", memory_mb=512)
    small = Action(name="small", memory_mb=256)
    settings = embedded_settings(**pooled("simulated"))
    async with stack_with([big, small], settings=settings) as stack:
        controller = stack.controller
        assert controller is not None
        await ready_cells(stack, 1)
        assert (await controller.invoke("big")).start is Start.COLD
        assert (await controller.invoke("small")).start is Start.PREWARM
        invoker = stack.invokers[0]
        assert invoker.prewarm.misses == {}, "no pool of big's size: not a miss"
        cell = invoker.prewarm.take(small)
        if cell is not None:
            await cell.remove()
        invoker.prewarm.take(small)
        assert invoker.prewarm.misses["python:256"] >= 1
        await eventually(lambda: controller.cluster.live()[0].prewarm_hits == {"python:256": 1})
        text = exposition(controller_families(controller)).decode()
        assert 'broker_sched_prewarm_hits_total{invoker="' in text
        assert "broker_sched_prewarm_ready{" in text
        assert "broker_sched_prewarm_misses_total{" in text


async def test_stem_cells_give_way_to_a_container_that_needs_their_room() -> None:
    action = Action(name="other", memory_mb=128)
    settings = embedded_settings(**pooled("simulated"), invoker={"slots": 1})
    async with stack_with([action], settings=settings) as stack:
        assert stack.controller is not None
        await ready_cells(stack, 1)
        result = await stack.controller.invoke("other")
        assert result.start is Start.COLD
        assert stack.invokers[0].prewarm.ready("python:256") == 0
        removed = [e for e in stack.timeline.events if e.kind == "stem_cell_removed"]
        assert removed[0].detail["reason"] == "gave way to a container"


class NoStemCells(SimulatedRuntime):
    name = "cells-less"
    makes_stem_cells = False


def test_a_runtime_without_stem_cells_refuses_a_pool() -> None:
    settings = embedded_settings(**pooled("simulated"))
    with pytest.raises(ConfigError, match="cells-less runtime makes no stem cells"):
        Stack(settings, runtime=NoStemCells(settings.simulated))


def test_the_sharding_policy_refuses_a_pool() -> None:
    settings = embedded_settings(**pooled("simulated"), policy="sharding")
    with pytest.raises(ConfigError, match="sharding policy makes its own containers"):
        Stack(settings)
