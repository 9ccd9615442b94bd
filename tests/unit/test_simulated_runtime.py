"""The simulated runtime on a fake clock: seeded costs, ranges, run semantics; the factory."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from pydantic import JsonValue

from broker_sched.config import SimulatedRuntimeSettings, load_settings
from broker_sched.model import Action, Start, Status
from broker_sched.runtime import runtime_from_settings
from broker_sched.runtime.base import Container, ContainerCrashed
from broker_sched.runtime.process import ProcessRuntime
from broker_sched.runtime.simulated import SimulatedRuntime

ACTION = Action(name="sim")
RANGES = SimulatedRuntimeSettings(
    seed=7,
    create_ms=(500.0, 1300.0),
    init_ms=(10.0, 20.0),
    pause_ms=(10.0, 25.0),
    resume_ms=(50.0, 400.0),
    remove_ms=(45.0, 100.0),
    run_ms=(2.0, 8.0),
)


class FakeClock:
    """Stands in for ``asyncio.sleep``: time advances by exactly what was asked, at once."""

    def __init__(self) -> None:
        self.now_s = 0.0

    async def sleep(self, seconds: float) -> None:
        self.now_s += seconds
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def runtime(clock: FakeClock) -> AsyncIterator[SimulatedRuntime]:
    runtime = SimulatedRuntime(RANGES, sleep=clock.sleep)
    try:
        yield runtime
    finally:
        await runtime.close()


async def lifecycle_costs(runtime: SimulatedRuntime, containers: int) -> list[float]:
    costs: list[float] = []
    for _ in range(containers):
        container, timings = await runtime.create(ACTION)
        costs += [timings.create_ms, timings.init_ms]
        costs += [(await container.run(None, 60)).run_ms for _ in range(3)]
        costs += [await container.pause(), await container.resume(), await container.remove()]
    return costs


async def test_the_same_seed_gives_the_same_costs(clock: FakeClock) -> None:
    first = await lifecycle_costs(SimulatedRuntime(RANGES, sleep=clock.sleep), 5)
    again = await lifecycle_costs(SimulatedRuntime(RANGES, sleep=clock.sleep), 5)
    other_seed = RANGES.model_copy(update={"seed": 8})
    other = await lifecycle_costs(SimulatedRuntime(other_seed, sleep=clock.sleep), 5)

    assert first == again
    assert first != other


async def test_a_containers_costs_do_not_depend_on_how_runs_interleave(clock: FakeClock) -> None:
    async def run_costs(order: list[int]) -> dict[int, list[float]]:
        runtime = SimulatedRuntime(RANGES, sleep=clock.sleep)
        containers = [(await runtime.create(ACTION))[0] for _ in range(3)]
        costs: dict[int, list[float]] = {index: [] for index in range(3)}
        for index in order:
            costs[index].append((await containers[index].run(None, 60)).run_ms)
        return costs

    assert await run_costs([0, 1, 2, 0, 1, 2]) == await run_costs([2, 2, 1, 0, 0, 1])


async def test_costs_stay_in_their_ranges_and_are_slept(
    runtime: SimulatedRuntime, clock: FakeClock
) -> None:
    def within(value_ms: float, range_ms: tuple[float, float]) -> bool:
        return range_ms[0] <= value_ms <= range_ms[1]

    for _ in range(50):
        started_s = clock.now_s
        container, timings = await runtime.create(ACTION)
        assert within(timings.create_ms, RANGES.create_ms)
        assert within(timings.init_ms, RANGES.init_ms)
        assert (clock.now_s - started_s) * 1000 == pytest.approx(
            timings.create_ms + timings.init_ms
        )

        started_s = clock.now_s
        outcome = await container.run({}, 60)
        assert within(outcome.run_ms, RANGES.run_ms)
        assert (clock.now_s - started_s) * 1000 == pytest.approx(outcome.run_ms)

        assert within(await container.pause(), RANGES.pause_ms)
        assert within(await container.resume(), RANGES.resume_ms)
        assert within(await container.remove(), RANGES.remove_ms)


async def test_a_fixed_range_gives_exactly_that_cost(clock: FakeClock) -> None:
    fixed = SimulatedRuntimeSettings(create_ms=(700.0, 700.0), run_ms=(2.0, 2.0))
    runtime = SimulatedRuntime(fixed, sleep=clock.sleep)
    container, timings = await runtime.create(ACTION)

    assert (timings.create_ms, timings.init_ms) == (700.0, 0.0)
    assert (await container.run(None, 60)).run_ms == 2.0
    await runtime.close()


async def test_run_echoes_the_payload(runtime: SimulatedRuntime) -> None:
    container, _ = await runtime.create(ACTION)

    merged = await container.run({"user": "ada"}, 60)
    wrapped = await container.run([1, 2], 60)

    assert (merged.status, merged.result, merged.error) == (
        Status.SUCCESS,
        {"ok": True, "user": "ada"},
        None,
    )
    assert wrapped.result == {"ok": True, "payload": [1, 2]}


async def test_sleep_ms_in_the_payload_sets_the_run_time(
    runtime: SimulatedRuntime, clock: FakeClock
) -> None:
    container, _ = await runtime.create(ACTION)
    started_s = clock.now_s

    outcome = await container.run({"sleep_ms": 250}, 60)

    assert outcome.run_ms == 250.0
    assert clock.now_s - started_s == pytest.approx(0.25)


@pytest.mark.parametrize("sleep_ms", [-1, "long", True, None])
async def test_a_bad_sleep_ms_is_an_action_error(
    runtime: SimulatedRuntime, sleep_ms: JsonValue
) -> None:
    container, _ = await runtime.create(ACTION)

    outcome = await container.run({"sleep_ms": sleep_ms}, 60)

    assert outcome.status is Status.ACTION_ERROR
    assert container.alive


async def test_an_error_in_the_payload_is_an_application_error(runtime: SimulatedRuntime) -> None:
    container, _ = await runtime.create(ACTION)

    outcome = await container.run({"error": "no such user"}, 60)

    assert (outcome.status, outcome.error) == (Status.APPLICATION_ERROR, "no such user")


async def test_a_run_over_its_time_limit_kills_the_container(
    runtime: SimulatedRuntime, clock: FakeClock
) -> None:
    container, _ = await runtime.create(ACTION)
    started_s = clock.now_s

    outcome = await container.run({"sleep_ms": 5000}, 0.5)

    assert (outcome.status, outcome.run_ms) == (Status.TIMEOUT, 500.0)
    assert clock.now_s - started_s == pytest.approx(0.5)
    assert not container.alive
    with pytest.raises(ContainerCrashed, match="time limit"):
        await container.run({}, 60)


async def test_a_paused_container_runs_only_after_resume(runtime: SimulatedRuntime) -> None:
    container, _ = await runtime.create(ACTION)
    await container.pause()
    assert container.paused

    run = asyncio.create_task(container.run("hi", 60))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not run.done()

    await container.resume()

    assert (await run).result == {"ok": True, "payload": "hi"}
    assert await container.resume() == 0.0


async def test_remove_is_idempotent_and_fails_later_runs(runtime: SimulatedRuntime) -> None:
    container, _ = await runtime.create(ACTION)

    assert await container.remove() > 0
    assert await container.remove() == 0.0
    assert not container.alive
    with pytest.raises(ContainerCrashed, match="removed"):
        await container.run({}, 60)


async def test_a_run_in_flight_during_remove_crashes(runtime: SimulatedRuntime) -> None:
    container, _ = await runtime.create(ACTION)
    run = asyncio.create_task(container.run({"sleep_ms": 1000}, 60))
    await asyncio.sleep(0)

    await container.remove()

    with pytest.raises(ContainerCrashed):
        await run


async def test_close_removes_every_container(clock: FakeClock) -> None:
    runtime = SimulatedRuntime(RANGES, sleep=clock.sleep)
    containers: list[Container] = [(await runtime.create(ACTION))[0] for _ in range(4)]
    await containers[0].remove()

    await runtime.close()

    assert not any(container.alive for container in containers)
    with pytest.raises(ContainerCrashed, match="closed"):
        await runtime.create(ACTION)


async def test_hundreds_of_containers_run_at_once_on_the_real_clock() -> None:
    quick = SimulatedRuntimeSettings(
        create_ms=(20.0, 40.0),
        pause_ms=(1.0, 1.0),
        resume_ms=(1.0, 1.0),
        remove_ms=(1.0, 2.0),
        run_ms=(50.0, 50.0),
    )
    runtime = SimulatedRuntime(quick)
    try:
        started_s = time.perf_counter()
        created = await asyncio.gather(*(runtime.create(ACTION) for _ in range(500)))
        outcomes = await asyncio.gather(*(c.run({}, 60) for c, _ in created))
        elapsed_s = time.perf_counter() - started_s
    finally:
        await runtime.close()

    assert all(o.status is Status.SUCCESS for o in outcomes)
    assert len({c.id for c, _ in created}) == 500
    assert elapsed_s < 2.0, "500 concurrent 40 ms + 50 ms containers should overlap"


def test_the_factory_builds_the_configured_runtime() -> None:
    simulated = runtime_from_settings(load_settings(runtime="simulated"))
    process = runtime_from_settings(load_settings(runtime="process"))

    assert isinstance(simulated, SimulatedRuntime)
    assert isinstance(process, ProcessRuntime)


async def test_a_stem_cell_costs_create_then_its_action_pays_only_init(
    runtime: SimulatedRuntime, clock: FakeClock
) -> None:
    cell = await runtime.start_stem_cell("python", 256)
    assert RANGES.create_ms[0] <= cell.create_ms <= RANGES.create_ms[1]
    assert clock.now_s == pytest.approx(cell.create_ms / 1000)
    before_s = clock.now_s
    container, timings = await runtime.initialise(cell, ACTION)
    assert timings.start is Start.PREWARM
    assert timings.create_ms == 0.0
    assert RANGES.init_ms[0] <= timings.init_ms <= RANGES.init_ms[1]
    assert clock.now_s - before_s == pytest.approx(timings.init_ms / 1000)
    assert not cell.alive
    assert (await container.run({"x": 1}, 1.0)).result == {"ok": True, "x": 1}
    with pytest.raises(ContainerCrashed, match="not a live one"):
        await runtime.initialise(cell, ACTION)


async def test_closing_the_runtime_removes_its_stem_cells(runtime: SimulatedRuntime) -> None:
    cell = await runtime.start_stem_cell("python", 256)
    await runtime.close()
    assert not cell.alive
    with pytest.raises(ContainerCrashed, match="closed"):
        await runtime.start_stem_cell("python", 256)
