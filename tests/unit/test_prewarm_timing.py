"""When a sequence's later steps are asked for: the chain's arithmetic, plain numbers."""

from __future__ import annotations

import pytest

from broker_sched.scheduler.prewarm import (
    OWN_SAMPLES,
    PrewarmAsk,
    PrewarmTiming,
    StepEstimate,
    cold_start_range,
    nearest_rank,
    prewarm_asks,
)

ONE_S = (1.0,) * OWN_SAMPLES


def step(
    action: str, run_s: float | None, colds_s: tuple[float, ...] = ONE_S, *, warm: bool = False
) -> StepEstimate:
    return StepEstimate(action, run_s, colds_s, warm)


def timing(lead_s: float = 0.0, quantile: float = 0.9, default_s: float = 0.7) -> PrewarmTiming:
    return PrewarmTiming(lead_s=lead_s, quantile=quantile, default_cold_start_s=default_s)


def test_the_papers_chain_asks_each_step_one_cold_start_before_the_steps_ahead_end() -> None:
    chain = [step("a", 3.0), step("b", 7.0), step("c", 5.0)]
    assert prewarm_asks(chain, timing()) == [
        PrewarmAsk(1, "b", 3.0, 4.0),
        PrewarmAsk(2, "c", 10.0, 11.0),
    ]


def test_a_warm_first_step_has_no_cold_start_ahead_of_the_second() -> None:
    chain = [step("a", 3.0, warm=True), step("b", 7.0, (0.5,) * 3)]
    assert prewarm_asks(chain, timing(lead_s=0.25)) == [PrewarmAsk(1, "b", 2.25, 3.0)]


def test_a_step_is_asked_for_by_its_slowest_likely_cold_start_the_first_by_its_quickest() -> None:
    spread = (0.4, 0.6, 0.8, 1.0, 1.7)
    chain = [step("a", 3.0, spread), step("b", 7.0, spread)]
    [ask] = prewarm_asks(chain, timing(lead_s=0.25))
    assert ask.needed_s == pytest.approx(0.4 + 3.0)
    assert ask.at_s == pytest.approx(0.4 + 3.0 - 1.7 - 0.25)


def test_a_lower_quantile_asks_later() -> None:
    spread = tuple(0.1 * n for n in range(1, 11))
    chain = [step("a", 3.0, spread), step("b", 7.0, spread)]
    [high] = prewarm_asks(chain, timing(quantile=0.9))
    [median] = prewarm_asks(chain, timing(quantile=0.5))
    assert high.at_s == pytest.approx(0.1 + 3.0 - 0.9)
    assert median.at_s == pytest.approx(0.5 + 3.0 - 0.5)


def test_a_step_with_few_samples_of_its_own_is_timed_by_the_whole_chains() -> None:
    chain = [step("a", 3.0, (0.4,)), step("b", 7.0, (0.5,)), step("c", 5.0, (1.6,))]
    asks = prewarm_asks(chain, timing())
    assert [ask.at_s for ask in asks] == pytest.approx([0.4 + 3.0 - 1.6, 0.4 + 10.0 - 1.6])


def test_a_step_with_enough_samples_is_timed_by_its_own() -> None:
    chain = [step("a", 3.0, (2.0,) * OWN_SAMPLES), step("b", 7.0, (0.5,) * OWN_SAMPLES)]
    [ask] = prewarm_asks(chain, timing())
    assert ask.at_s == pytest.approx(2.0 + 3.0 - 0.5)


def test_a_plan_from_a_reached_step_starts_from_when_it_was_reached() -> None:
    chain = [step("a", 3.0), step("b", 7.0, warm=True), step("c", 5.0)]
    assert prewarm_asks(chain, timing(), reached=1, reached_at_s=4.6) == [
        PrewarmAsk(2, "c", 4.6 + 7.0 - 1.0, 11.6)
    ]


def test_a_reached_step_that_is_cold_adds_its_quickest_cold_start() -> None:
    chain = [step("a", 3.0), step("b", 7.0, (0.5, 1.0, 2.0)), step("c", 5.0)]
    [ask] = prewarm_asks(chain, timing(), reached=1, reached_at_s=4.0)
    assert ask.needed_s == pytest.approx(4.0 + 0.5 + 7.0)


def test_an_ask_due_before_the_reached_step_is_made_at_once() -> None:
    chain = [step("a", 3.0), step("b", 0.1, warm=True), step("c", 5.0, (3.0,) * 3)]
    [ask] = prewarm_asks(chain, timing(), reached=1, reached_at_s=4.0)
    assert ask.at_s == 4.0


def test_nothing_is_asked_for_at_or_before_the_reached_step() -> None:
    chain = [step("a", 3.0), step("b", 7.0), step("c", 5.0)]
    assert prewarm_asks(chain, timing(), reached=2, reached_at_s=11.0) == []


def test_a_warm_later_step_is_not_asked_for_and_still_counts_its_run() -> None:
    chain = [step("a", 1.0), step("b", 2.0, warm=True), step("c", 1.0)]
    assert prewarm_asks(chain, timing()) == [PrewarmAsk(2, "c", 3.0, 4.0)]


def test_an_unmeasured_run_asks_for_every_step_after_it_at_once() -> None:
    chain = [step("a", 1.0), step("b", None), step("c", 2.0), step("d", 1.0)]
    assert prewarm_asks(chain, timing()) == [
        PrewarmAsk(1, "b", 1.0, 2.0),
        PrewarmAsk(2, "c", 0.0, None),
        PrewarmAsk(3, "d", 0.0, None),
    ]


def test_an_unmeasured_run_asks_at_once_from_the_reached_step() -> None:
    chain = [step("a", 1.0), step("b", None, warm=True), step("c", 2.0)]
    assert prewarm_asks(chain, timing(), reached=1, reached_at_s=2.5) == [
        PrewarmAsk(2, "c", 2.5, None)
    ]


def test_no_cold_start_measured_in_the_chain_uses_the_default() -> None:
    chain = [step("a", 0.1, ()), step("b", 0.1, ())]
    [ask] = prewarm_asks(chain, timing(default_s=0.7))
    assert ask.at_s == pytest.approx(0.1)
    assert ask.needed_s == pytest.approx(0.8)


def test_a_cold_start_longer_than_the_steps_ahead_asks_at_once() -> None:
    chain = [step("a", 0.1, (0.1,) * 3), step("b", 0.1, (2.0,) * 3)]
    assert prewarm_asks(chain, timing())[0].at_s == 0.0


def test_an_action_twice_in_the_chain_is_asked_for_once() -> None:
    chain = [step("a", 1.0), step("b", 1.0), step("b", 1.0), step("a", 1.0)]
    assert [ask.step for ask in prewarm_asks(chain, timing())] == [1]


def test_an_action_of_a_warm_step_is_not_asked_for_again_later() -> None:
    chain = [step("a", 1.0), step("b", 1.0, warm=True), step("b", 1.0)]
    assert prewarm_asks(chain, timing()) == []


@pytest.mark.parametrize("chain", [[], [step("a", 1.0)]])
def test_nothing_to_ask_without_a_later_step(chain: list[StepEstimate]) -> None:
    assert prewarm_asks(chain, timing()) == []


def test_negative_estimates_count_as_zero() -> None:
    chain = [step("a", -4.0, (-1.0,) * 3), step("b", 1.0, (-2.0,) * 3)]
    assert prewarm_asks(chain, timing(default_s=1.0)) == [PrewarmAsk(1, "b", 0.0, 0.0)]


@pytest.mark.parametrize(
    ("samples", "quantile", "expected"),
    [
        ((1.0,), 0.9, 1.0),
        ((1.0,), 0.1, 1.0),
        ((3.0, 1.0, 2.0), 0.9, 3.0),
        ((3.0, 1.0, 2.0), 1 / 3, 1.0),
        ((3.0, 1.0, 2.0), 0.5, 2.0),
        (tuple(float(n) for n in range(1, 11)), 0.9, 9.0),
        (tuple(float(n) for n in range(1, 11)), 1.0, 10.0),
        (tuple(float(n) for n in range(1, 11)), 0.1, 1.0),
    ],
)
def test_nearest_rank(samples: tuple[float, ...], quantile: float, expected: float) -> None:
    assert nearest_rank(samples, quantile) == expected


@pytest.mark.parametrize("quantile", [0.0, -0.5, 1.5])
def test_nearest_rank_refuses_a_quantile_outside_0_to_1(quantile: float) -> None:
    with pytest.raises(ValueError, match="quantile"):
        nearest_rank((1.0,), quantile)


def test_nearest_rank_refuses_no_samples() -> None:
    with pytest.raises(ValueError, match="no samples"):
        nearest_rank((), 0.9)


def test_one_sample_is_both_ends_of_the_range() -> None:
    assert cold_start_range((0.8,), (0.8,), timing()) == (0.8, 0.8)


def test_a_quantile_of_1_ranges_from_the_smallest_to_the_largest() -> None:
    own = (0.5, 0.9, 1.4)
    assert cold_start_range(own, own, timing(quantile=1.0)) == (0.5, 1.4)


def test_a_quantile_below_one_half_never_makes_the_low_end_the_higher() -> None:
    own = (0.5, 0.9, 1.4)
    low_s, high_s = cold_start_range(own, own, timing(quantile=0.2))
    assert low_s <= high_s
