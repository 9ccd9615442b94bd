"""When a sequence's later steps are asked for: the chain's arithmetic, plain numbers."""

from __future__ import annotations

import pytest

from broker_sched.scheduler.prewarm import PrewarmAsk, StepEstimate, prewarm_asks


def step(
    action: str, run_s: float | None, cold_s: float | None = 1.0, *, warm: bool = False
) -> StepEstimate:
    return StepEstimate(action, run_s, cold_s, warm)


def test_the_papers_chain_asks_each_step_one_cold_start_before_the_steps_ahead_end() -> None:
    chain = [step("a", 3.0), step("b", 7.0), step("c", 5.0)]
    assert prewarm_asks(chain, lead_s=0.0, default_cold_start_s=0.7) == [
        PrewarmAsk(1, "b", 3.0, 4.0),
        PrewarmAsk(2, "c", 10.0, 11.0),
    ]


def test_a_warm_first_step_has_no_cold_start_ahead_of_the_second() -> None:
    chain = [step("a", 3.0, warm=True), step("b", 7.0, 0.5)]
    assert prewarm_asks(chain, lead_s=0.25, default_cold_start_s=0.7) == [
        PrewarmAsk(1, "b", 2.25, 3.0)
    ]


def test_a_warm_later_step_is_not_asked_for_and_still_counts_its_run() -> None:
    chain = [step("a", 1.0), step("b", 2.0, warm=True), step("c", 1.0)]
    assert prewarm_asks(chain, lead_s=0.0, default_cold_start_s=0.7) == [
        PrewarmAsk(2, "c", 3.0, 4.0)
    ]


def test_an_unmeasured_run_asks_for_every_step_after_it_at_once() -> None:
    chain = [step("a", 1.0), step("b", None), step("c", 2.0), step("d", 1.0)]
    asks = prewarm_asks(chain, lead_s=0.0, default_cold_start_s=0.7)
    assert asks == [
        PrewarmAsk(1, "b", 1.0, 2.0),
        PrewarmAsk(2, "c", 0.0, None),
        PrewarmAsk(3, "d", 0.0, None),
    ]


def test_an_unmeasured_cold_start_uses_the_default_and_a_late_estimate_asks_at_once() -> None:
    chain = [step("a", 0.1, None), step("b", 0.1, None)]
    [ask] = prewarm_asks(chain, lead_s=0.0, default_cold_start_s=0.7)
    assert ask.at_s == pytest.approx(0.1)
    assert ask.needed_s == pytest.approx(0.8)
    quick = [step("a", 0.1, 0.1), step("b", 0.1, 2.0)]
    assert prewarm_asks(quick, lead_s=0.0, default_cold_start_s=0.7)[0].at_s == 0.0


def test_an_action_twice_in_the_chain_is_asked_for_once() -> None:
    chain = [step("a", 1.0), step("b", 1.0), step("b", 1.0), step("a", 1.0)]
    assert [ask.step for ask in prewarm_asks(chain, lead_s=0.0, default_cold_start_s=1.0)] == [1]


@pytest.mark.parametrize("chain", [[], [step("a", 1.0)]])
def test_nothing_to_ask_without_a_later_step(chain: list[StepEstimate]) -> None:
    assert prewarm_asks(chain, lead_s=0.0, default_cold_start_s=1.0) == []


def test_negative_estimates_count_as_zero() -> None:
    chain = [step("a", -4.0, -1.0), step("b", 1.0, -2.0)]
    assert prewarm_asks(chain, lead_s=0.0, default_cold_start_s=1.0) == [
        PrewarmAsk(1, "b", 0.0, 0.0)
    ]
