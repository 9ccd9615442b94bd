"""Sequence actions end to end: steps in order, records per step, errors, pre-warming."""

from __future__ import annotations

import asyncio

import pytest
from embedded import embedded_settings, eventually, stack_with

from broker_sched.errors import ConfigError
from broker_sched.model import Action, Start, Status
from broker_sched.scheduler.controller import Controller
from transports.memory import MemoryTransport

pytestmark = pytest.mark.slow

ECHO = Action(name="echo")
SLOW = Action(name="slow")
FAIL = Action(name="fail", handler="broker_sched.samples:fail")


def simulated(**sequences: object) -> dict[str, object]:
    return {
        "runtime": "simulated",
        "simulated": {"create_ms": (300.0, 300.0), "init_ms": (0.0, 0.0)},
        "sequences": sequences,
    }


async def test_a_sequence_runs_its_steps_in_order_and_records_each() -> None:
    first = Action(name="first", handler="broker_sched.samples:hello")
    chain = Action(name="chain", sequence=("first", "guest/echo", "echo"))
    async with stack_with([first, ECHO, chain]) as stack:
        controller = stack.controller
        assert controller is not None
        result = await controller.invoke("chain", {"name": "seq"})
        assert result.status is Status.SUCCESS
        assert result.result == {"greeting": "Hello, seq!"}
        assert result.action == "chain"
        assert len(result.steps) == 3
        steps = [controller.results[step] for step in result.steps]
        assert [s.action for s in steps] == ["first", "echo", "echo"]
        assert steps[1].result == {"greeting": "Hello, seq!"}
        assert controller.results[result.activation_id] is result
        assert result.run_ms >= sum(s.run_ms for s in steps)


async def test_a_failing_step_ends_the_sequence_naming_it() -> None:
    chain = Action(name="chain", sequence=("echo", "fail", "echo"))
    async with stack_with([ECHO, FAIL, chain]) as stack:
        controller = stack.controller
        assert controller is not None
        result = await controller.invoke("chain", {"x": 1})
        assert result.status is Status.ACTION_ERROR
        assert result.error is not None
        assert result.error.startswith("step 2 of 3 (guest/fail): ")
        assert len(result.steps) == 2
        assert controller.results[result.steps[1]].status is Status.ACTION_ERROR


async def test_a_non_blocking_sequence_keeps_its_record_for_later() -> None:
    chain = Action(name="chain", sequence=("echo", "echo"))
    async with stack_with([ECHO, chain]) as stack:
        controller = stack.controller
        assert controller is not None
        activation_id = await controller.invoke("chain", {"n": 1}, blocking=False)
        await eventually(lambda: activation_id in controller.results)
        assert controller.results[activation_id].result == {"n": 1}


@pytest.mark.parametrize(
    ("actions", "problem"),
    [
        ([Action(name="s", sequence=("echo", "nope"))], "step 'nope' is not an action"),
        ([Action(name="s", sequence=("s",))], "cycle: guest/s → guest/s"),
        (
            [Action(name="a", sequence=("b",)), Action(name="b", sequence=("echo", "a"))],
            "cycle: guest/a → guest/b → guest/a",
        ),
    ],
)
def test_bad_sequences_fail_when_the_controller_starts(actions: list[Action], problem: str) -> None:
    definitions = {a.fqn: a for a in [ECHO, *actions]}
    with pytest.raises(ConfigError, match=problem):
        Controller(transport=MemoryTransport(), settings=embedded_settings(), actions=definitions)


async def test_pre_warming_gives_later_steps_warm_starts_and_counts_the_waste() -> None:
    chain = Action(name="chain", sequence=("echo", "slow", "guest/slow2"))
    slow2 = Action(name="slow2")
    settings = embedded_settings(
        **simulated(prewarm=True, prewarm_lead_s=0.1), invoker={"pause_grace_s": 5.0}
    )
    async with stack_with([ECHO, SLOW, slow2, chain], settings=settings) as stack:
        controller = stack.controller
        assert controller is not None
        result = await controller.invoke("chain", {"sleep_ms": 400})
        assert result.status is Status.SUCCESS
        starts = [controller.results[step].start for step in result.steps]
        assert starts == [Start.COLD, Start.WARM, Start.WARM]
        ledger = controller.sequences.ledger
        assert ledger.asked == 2
        assert ledger.used == 2
        requested = [e for e in stack.timeline.events if e.kind == "container_requested"]
        assert any(e.detail["reason"].startswith("pre-warm: guest/chain step 3") for e in requested)


async def test_a_measured_chain_times_its_asks_and_its_later_steps_still_start_warm() -> None:
    chain = Action(name="chain", sequence=("echo", "slow", "guest/slow2"))
    slow2 = Action(name="slow2")
    settings = embedded_settings(
        **simulated(prewarm=True, prewarm_lead_s=0.5),
        # A warmed container waits up to about 1 s for its step: room for a loaded machine.
        invoker={"keep_alive_s": 3.0, "pause_grace_s": 5.0},
    )
    async with stack_with([ECHO, SLOW, slow2, chain], settings=settings) as stack:
        controller = stack.controller
        assert controller is not None
        await controller.invoke("chain", {"sleep_ms": 1000})
        names = ("guest/echo", "guest/slow", "guest/slow2")
        await eventually(
            lambda: (
                not any(i.proxies for i in stack.invokers)
                and not any(
                    controller.cluster.running(n) + controller.cluster.creating(n) for n in names
                )
            ),
            timeout_s=30.0,
        )
        asked_before = len(stack.timeline.events)
        result = await controller.invoke("chain", {"sleep_ms": 1000})
        starts = [controller.results[step].start for step in result.steps]
        assert starts == [Start.COLD, Start.WARM, Start.WARM]
        reasons = [
            e.detail["reason"]
            for e in list(stack.timeline.events)[asked_before:]
            if e.kind == "container_requested" and e.detail["reason"].startswith("pre-warm")
        ]
        assert len(reasons) == 2
        assert not any("unknown" in reason for reason in reasons)


async def test_without_pre_warming_every_step_is_a_cold_start() -> None:
    chain = Action(name="chain", sequence=("echo", "slow"))
    settings = embedded_settings(**simulated(prewarm=False))
    async with stack_with([ECHO, SLOW, chain], settings=settings) as stack:
        controller = stack.controller
        assert controller is not None
        result = await controller.invoke("chain", {"sleep_ms": 100})
        starts = [controller.results[step].start for step in result.steps]
        assert starts == [Start.COLD, Start.COLD]
        assert controller.sequences.ledger.asked == 0


async def test_containers_warmed_for_steps_never_reached_are_released_after_the_ttl() -> None:
    chain = Action(name="chain", sequence=("echo", "slow"))
    settings = embedded_settings(**simulated(prewarm=True, prewarm_ttl_s=0.3))
    async with stack_with([ECHO, SLOW, chain], settings=settings) as stack:
        controller = stack.controller
        assert controller is not None
        result = await controller.invoke("chain", {"error": "stop here", "sleep_ms": 50})
        assert result.status is Status.APPLICATION_ERROR
        assert result.error is not None
        assert result.error.startswith("step 1 of 2 (guest/echo)")
        ledger = controller.sequences.ledger
        await eventually(lambda: ledger.released == 1)
        assert ledger.asked == 1
        assert ledger.wasted_s > 0.3
        await eventually(
            lambda: not any(p.action == "guest/slow" for i in stack.invokers for p in i.proxies)
        )
        await asyncio.sleep(0)


async def test_a_step_that_runs_out_of_the_sequences_time_ends_it_as_a_timeout() -> None:
    chain = Action(name="chain", sequence=("echo", "slow"))
    settings = embedded_settings(**simulated(prewarm=False))
    async with stack_with([ECHO, SLOW, chain], settings=settings) as stack:
        controller = stack.controller
        assert controller is not None
        result = await controller.invoke("chain", {"sleep_ms": 100}, timeout_s=0.6)
        assert result.status is Status.TIMEOUT
        assert result.error is not None
        assert result.error.startswith("step 2 of 2 (guest/slow): ")
        assert len(result.steps) == 1
