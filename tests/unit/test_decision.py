"""The scaling decision, rule by rule, with the numbers docs/scaling.md quotes."""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

import pytest
from action_states import state

from broker_sched.config import SchedulerSettings
from broker_sched.scheduler.decision import (
    DEFAULT_COLD_START_S,
    MIN_RUN_S,
    ActionDecision,
    ActionState,
    Decision,
    Snapshot,
    decide,
)

DEFAULTS = SchedulerSettings()


def decide_one(
    free_slots: int = 1000, now_s: float = 1000.0, settings: SchedulerSettings = DEFAULTS, **kw: Any
) -> ActionDecision:
    decision = decide(Snapshot(now_s, (state(**kw),), free_slots), settings)
    (only,) = decision.actions
    return only


def decide_many(
    states: list[ActionState], free_slots: int, settings: SchedulerSettings = DEFAULTS
) -> Decision:
    return decide(Snapshot(1000.0, tuple(states), free_slots), settings)


class TestRule1Poke:
    def test_first_activation_creates_one_now(self) -> None:
        decided = decide_one(pending=1)
        assert (decided.rule, decided.create, decided.desired) == ("poke", 1, 1)
        assert decided.wait_s == math.inf

    def test_poke_is_one_even_under_heavy_arrivals(self) -> None:
        decided = decide_one(pending=500, arrival_rate_per_s=10_000.0)
        assert (decided.rule, decided.create) == ("poke", 1)

    def test_container_being_created_counts(self) -> None:
        decided = decide_one(pending=1, creating=1)
        assert decided.rule != "poke"
        assert decided.create == 0

    def test_in_flight_without_any_container_gets_a_consumer(self) -> None:
        decided = decide_one(in_flight=3)
        assert (decided.rule, decided.create) == ("poke", 1)
        assert "consumer" in decided.reason

    def test_poke_needs_a_free_slot(self) -> None:
        decided = decide_one(pending=1, free_slots=0)
        assert (decided.rule, decided.create, decided.desired) == ("capped-capacity", 0, 0)


class TestRule2Sustained:
    def test_arrivals_above_capacity_with_small_backlog_scale_out(self) -> None:
        # μ = 1·1/0.02 = 50/s, u·μ = 40/s ≤ λ = 60/s → ceil(60·0.02/0.8) = 2
        decided = decide_one(pending=3, arrival_rate_per_s=60.0, running=1, mean_run_s=0.02)
        assert (decided.rule, decided.desired, decided.create) == ("sustained", 2, 1)
        assert "ceil(λ·d/(c·u))=2" in decided.reason

    def test_backlog_wait_brought_down_to_target(self) -> None:
        # rate alone wants ceil(90·0.01/0.8) = 2; W = 40·0.01/1 = 0.4 s > T needs ceil(4) = 4
        decided = decide_one(pending=40, arrival_rate_per_s=90.0, running=1, mean_run_s=0.01)
        assert (decided.rule, decided.desired, decided.create) == ("sustained", 4, 3)
        assert decided.wait_s == pytest.approx(0.4)

    def test_long_runs_with_backlog_scale_out_capped_by_limit(self) -> None:
        # 2 s runs, P = 50: W ≤ T would need 1000 containers; the limit is 10
        decided = decide_one(
            pending=50, arrival_rate_per_s=5.0, running=1, mean_run_s=2.0, limit=10
        )
        assert (decided.rule, decided.desired, decided.create) == ("capped-limit", 10, 9)
        assert decided.wait_s == pytest.approx(100.0)
        assert "W ≤ T=0.1s needs 54 (≤ 54 with work)" in decided.reason

    def test_concurrency_divides_the_need(self) -> None:
        # μ = 4/0.1 = 40/s; ceil(100·0.1/(4·0.8)) = ceil(3.125) = 4
        decided = decide_one(arrival_rate_per_s=100.0, running=1, mean_run_s=0.1, concurrency=4)
        assert (decided.rule, decided.desired, decided.create) == ("sustained", 4, 3)

    def test_containers_being_created_are_not_asked_for_again(self) -> None:
        decided = decide_one(arrival_rate_per_s=100.0, running=1, creating=2, mean_run_s=0.02)
        assert (decided.desired, decided.create) == (3, 0)

    def test_float_noise_is_not_one_more_container(self) -> None:
        # λ = u·μ exactly: 8·0.1/0.8 is 1.0000000000000002 in floats
        decided = decide_one(arrival_rate_per_s=8.0, running=1, mean_run_s=0.1)
        assert (decided.rule, decided.desired, decided.create) == ("sustained", 1, 0)

    def test_arrivals_with_nothing_running_and_nothing_pending(self) -> None:
        decided = decide_one(arrival_rate_per_s=100.0, mean_run_s=0.02)
        assert (decided.rule, decided.desired, decided.create) == ("sustained", 3, 3)


class TestBacklogTermsAreCappedByWork:
    def test_two_activations_of_a_slow_action_do_not_ask_for_forty_containers(self) -> None:
        # W ≤ T alone: ceil(1·4/0.1) = 40; work for at most P + F + λ·C = 1 + 1 + 2·0.7 → 4
        decided = decide_one(
            pending=1, in_flight=1, arrival_rate_per_s=2.0, running=1, mean_run_s=4.0
        )
        assert decided.rule == "sustained"
        # the rate term ceil(2·4/0.8) = 10 extrapolates calls that never came: capped by
        # the calls pending, in flight and seen in the 1 s window, 1 + 1 + 2
        assert decided.desired == 4
        assert "needs 4 (≤ 4 with work)" in decided.reason

    def test_a_steady_rate_is_not_capped_as_its_calls_are_in_flight(self) -> None:
        # Little's law: at λ = 100/s and d = 0.1 s, 10 are in flight; ceil(100·0.1/0.8)
        decided = decide_one(in_flight=10, arrival_rate_per_s=100.0, running=10, mean_run_s=0.1)
        assert (decided.rule, decided.desired) == ("sustained", 13)

    def test_no_burst_drain_beyond_the_work_there_is(self) -> None:
        decided = decide_one(pending=2, arrival_rate_per_s=0.1, running=3, mean_run_s=5.0)
        assert (decided.rule, decided.create) == ("burst-wait", 0)


class TestStandingBacklog:
    def test_a_backlog_older_than_a_cold_start_is_not_a_burst(self) -> None:
        # closed-loop callers: P never drains, so waiting for the previous run never ends
        kw = {"pending": 99, "in_flight": 1, "arrival_rate_per_s": 380.0, "running": 1}
        kw |= {"creating": 1, "mean_run_s": 0.003}
        assert decide_one(**kw).rule == "burst-wait"
        decided = decide_one(**kw, backlog_since_s=999.0)  # 1 s old, C = 0.7 s
        assert (decided.rule, decided.desired) == ("capped-limit", 50)
        assert decided.reason.startswith("capped-limit:")
        assert "not a burst" in decided.reason
        assert "ceil((P+F)/c)=100" in decided.reason


class TestRule3Burst:
    def test_short_runs_long_cold_start_wait_for_previous_run(self) -> None:
        # 20 ms runs, 700 ms cold start, burst of 5, λ = 1/s, one container:
        # μ = 50/s, drains in 5/49 = 0.10 s ≤ max(T, C) = 0.7 s → create nothing
        decided = decide_one(
            pending=5, arrival_rate_per_s=1.0, running=1, mean_run_s=0.02, cold_start_s=0.7
        )
        assert (decided.rule, decided.create, decided.desired) == ("burst-wait", 0, 1)
        assert "wait for the previous run" in decided.reason
        assert "P/(μ-λ)=0.102s" in decided.reason

    def test_burst_that_outlasts_a_cold_start_is_drained(self) -> None:
        # C = 50 ms so the horizon is T = 0.1 s; P = 30 drains in 30/49 = 0.61 s > 0.1 s:
        # enough to drain in 0.1 s: ceil((1 + 30/0.1)·0.02) = ceil(6.02) = 7
        decided = decide_one(
            pending=30, arrival_rate_per_s=1.0, running=1, mean_run_s=0.02, cold_start_s=0.05
        )
        assert (decided.rule, decided.desired, decided.create) == ("burst-drain", 7, 6)

    def test_unmeasured_cold_start_is_assumed(self) -> None:
        # same burst with C unknown: 0.61 s ≤ 0.7 s → wait
        decided = decide_one(
            pending=30, arrival_rate_per_s=1.0, running=1, mean_run_s=0.02, cold_start_s=None
        )
        assert DEFAULT_COLD_START_S == 0.7
        assert (decided.rule, decided.create) == ("burst-wait", 0)
        assert "C=0.7s (assumed)" in decided.reason

    def test_drain_exactly_at_horizon_waits(self) -> None:
        # μ = 10/s, λ = 0, P = 7 → 0.7 s = C
        decided = decide_one(pending=7, running=1, mean_run_s=0.1, cold_start_s=0.7)
        assert (decided.rule, decided.create) == ("burst-wait", 0)

    def test_drain_just_over_horizon_creates(self) -> None:
        decided = decide_one(pending=8, running=1, mean_run_s=0.1, cold_start_s=0.7)
        assert decided.rule == "burst-drain"
        assert decided.create >= 1

    def test_enough_capacity_and_no_backlog_is_steady(self) -> None:
        decided = decide_one(arrival_rate_per_s=10.0, running=2, mean_run_s=0.02)
        assert (decided.rule, decided.create, decided.desired) == ("steady", 0, 1)


class TestRule4Caps:
    @pytest.mark.parametrize(
        ("running", "creating", "expected_create"),
        [(0, 0, 1), (1, 0, 3), (2, 1, 1), (3, 1, 0), (4, 0, 0), (5, 0, 0), (9, 0, 0)],
    )
    def test_partition_count_never_exceeded_not_even_by_one(
        self, running: int, creating: int, expected_create: int
    ) -> None:
        decided = decide_one(
            pending=500,
            arrival_rate_per_s=1000.0,
            running=running,
            creating=creating,
            mean_run_s=0.05,
            partitions=4,
        )
        assert decided.create == expected_create
        assert running + creating + decided.create <= max(4, running + creating)
        assert decided.resize_partitions_to is None

    def test_partitions_bind_tagged(self) -> None:
        decided = decide_one(pending=500, running=1, mean_run_s=0.05, partitions=4)
        assert (decided.rule, decided.desired, decided.create) == ("capped-partitions", 4, 3)
        assert "auto_partitions off" in decided.reason

    def test_resize_requested_with_auto_partitions(self) -> None:
        settings = SchedulerSettings(auto_partitions=True, resize_cooldown_s=30.0)
        decided = decide_one(
            pending=500, running=4, mean_run_s=0.05, partitions=4, limit=20, settings=settings
        )
        assert decided.resize_partitions_to == 20  # wanted 36 (drain in 0.7 s), limit 20
        assert decided.create == 0  # the new partitions are not there yet
        assert "resize partitions 4→20" in decided.reason

    def test_resize_target_is_what_is_wanted_below_limit(self) -> None:
        settings = SchedulerSettings(auto_partitions=True)
        decided = decide_one(
            pending=12,
            arrival_rate_per_s=100.0,
            running=1,
            mean_run_s=0.05,
            partitions=2,
            settings=settings,
        )
        # ceil(100·0.05/0.8) = 7, ceil(12·0.05/0.1) = 6 → 7
        assert (decided.resize_partitions_to, decided.desired, decided.create) == (7, 2, 1)

    @pytest.mark.parametrize(
        ("last_resize_s", "resized"),
        [(None, True), (970.0, True), (969.0, True), (970.5, False), (999.0, False)],
    )
    def test_resize_cooldown_respected(self, last_resize_s: float | None, resized: bool) -> None:
        settings = SchedulerSettings(auto_partitions=True, resize_cooldown_s=30.0)
        decided = decide_one(
            now_s=1000.0,
            pending=500,
            running=4,
            mean_run_s=0.05,
            partitions=4,
            last_resize_s=last_resize_s,
            settings=settings,
        )
        assert (decided.resize_partitions_to is not None) == resized
        if not resized:
            assert "cooldown" in decided.reason

    def test_no_resize_when_limit_binds_first(self) -> None:
        settings = SchedulerSettings(auto_partitions=True)
        decided = decide_one(
            pending=500, running=1, mean_run_s=0.05, partitions=8, limit=8, settings=settings
        )
        assert (decided.rule, decided.create, decided.resize_partitions_to) == (
            "capped-limit",
            7,
            None,
        )

    def test_no_resize_when_nothing_more_is_wanted(self) -> None:
        settings = SchedulerSettings(auto_partitions=True)
        decided = decide_one(pending=1, running=3, mean_run_s=0.02, partitions=2, settings=settings)
        assert decided.resize_partitions_to is None

    def test_no_resize_on_unpartitioned_transport(self) -> None:
        settings = SchedulerSettings(auto_partitions=True)
        decided = decide_one(pending=500, running=1, mean_run_s=0.05, settings=settings)
        assert decided.resize_partitions_to is None

    def test_limit_below_existing_creates_nothing(self) -> None:
        decided = decide_one(pending=500, running=6, mean_run_s=0.05, limit=3)
        assert (decided.rule, decided.create, decided.desired) == ("capped-limit", 0, 3)

    def test_free_capacity_caps(self) -> None:
        # burst of 500 on one 50 ms container drains in 25 s; within 0.7 s takes 36
        decided = decide_one(pending=500, running=1, mean_run_s=0.05, free_slots=4)
        assert (decided.rule, decided.create, decided.desired) == ("capped-capacity", 4, 5)
        assert "4 of 35 fit the free slots" in decided.reason


class TestRule5Fairness:
    def busy(self, name: str = "guest/busy") -> ActionState:
        return state(name, pending=1000, arrival_rate_per_s=500.0, running=3, mean_run_s=0.1)

    def newcomer(self, name: str, pending: int = 1) -> ActionState:
        return state(name, pending=pending)

    def test_idle_action_not_starved_by_busy_one(self) -> None:
        decision = decide_many([self.busy(), self.newcomer("guest/new")], free_slots=1)
        assert decision.for_action("guest/new") == decision.actions[1]
        assert decision.actions[1].create == 1
        assert decision.actions[0].create == 0
        assert decision.actions[0].rule == "capped-capacity"

    def test_every_newcomer_first_then_the_rest_shared(self) -> None:
        states = [self.busy(), *(self.newcomer(f"guest/n{i}") for i in range(3))]
        decision = decide_many(states, free_slots=5)
        assert [d.create for d in decision.actions] == [2, 1, 1, 1]

    def test_scarce_slots_go_to_newcomers_with_biggest_backlog(self) -> None:
        states = [
            self.busy(),
            self.newcomer("guest/small", pending=1),
            self.newcomer("guest/big", pending=9),
        ]
        decision = decide_many(states, free_slots=1)
        assert [d.create for d in decision.actions] == [0, 0, 1]

    def test_busy_actions_share_in_rounds(self) -> None:
        states = [self.busy("guest/b1"), self.busy("guest/b2"), self.busy("guest/b3")]
        decision = decide_many(states, free_slots=10)
        assert sorted(d.create for d in decision.actions) == [3, 3, 4]

    def test_smaller_action_gets_the_odd_slot(self) -> None:
        small = state("guest/small", pending=1000, running=1, mean_run_s=0.1)
        decision = decide_many([self.busy(), small], free_slots=3)
        assert [d.create for d in decision.actions] == [1, 2]

    def test_action_wanting_less_leaves_the_rest(self) -> None:
        modest = state("guest/modest", pending=3, arrival_rate_per_s=60.0, running=1)
        decision = decide_many([self.busy(), modest], free_slots=10)
        assert [d.create for d in decision.actions] == [9, 1]

    def test_plenty_of_slots_everyone_gets_all(self) -> None:
        decision = decide_many([self.busy(), self.newcomer("guest/new")], free_slots=10_000)
        assert decision.actions[0].create == 47  # limit 50, 3 running
        assert decision.actions[1].create == 1

    def test_order_of_the_snapshot_is_kept(self) -> None:
        names = [f"guest/x{i}" for i in range(5)]
        decision = decide_many([state(name) for name in names], free_slots=0)
        assert [d.action for d in decision.actions] == names


class TestRule6Throttle:
    # W_L = P·d/(c·L) with d = 1 s, c = 1, L = 10: W_L = P/10; max_wait 10 s, release 9 s
    @pytest.mark.parametrize(
        ("pending", "was_throttled", "now_throttled"),
        [
            (101, False, True),  # 10.1 s > 10 s: on
            (100, False, False),  # exactly at the threshold: not above it
            (100, True, True),  # ... and an existing throttle stays
            (95, True, True),  # inside the hysteresis band
            (95, False, False),
            (90, True, True),  # exactly 0.9 of the threshold: not below it yet
            (89, True, False),  # 8.9 s < 9 s: lifted
            (0, True, False),
            (10_000, True, True),
        ],
    )
    def test_on_above_threshold_off_below_release(
        self, pending: int, was_throttled: bool, now_throttled: bool
    ) -> None:
        decided = decide_one(
            pending=pending, running=10, mean_run_s=1.0, limit=10, throttled=was_throttled
        )
        assert decided.throttled is now_throttled

    def test_reason_says_why(self) -> None:
        on = decide_one(pending=101, running=10, mean_run_s=1.0, limit=10)
        assert "throttled: W_L=10.1s > max_wait_s=10s" in on.reason
        off = decide_one(pending=89, running=10, mean_run_s=1.0, limit=10, throttled=True)
        assert "throttle lifted" in off.reason

    def test_release_ratio_from_settings(self) -> None:
        settings = SchedulerSettings(max_wait_s=1.0, throttle_release_ratio=0.5)
        kw: dict[str, Any] = {"running": 10, "mean_run_s": 1.0, "limit": 10, "throttled": True}
        assert decide_one(pending=6, settings=settings, **kw).throttled is True
        assert decide_one(pending=4, settings=settings, **kw).throttled is False

    def test_throttle_does_not_stop_scaling(self) -> None:
        decided = decide_one(pending=10_000, running=1, mean_run_s=1.0, limit=10)
        assert decided.throttled
        assert decided.create == 9

    def test_zero_limit_with_backlog_throttles(self) -> None:
        decided = decide_one(pending=1, limit=0)
        assert decided.throttled
        assert decided.create == 0


class TestRule7UnknownRunTime:
    def test_unknown_run_time_uses_target_wait_within_slow_start(self) -> None:
        # d = T = 0.1: μ = 10/s, λ = 20 ≥ 8 → ceil(20·0.1/0.8) = 3, but slow start: ≤ 2·R = 2
        unknown = decide_one(arrival_rate_per_s=20.0, running=1, mean_run_s=None)
        known = decide_one(arrival_rate_per_s=20.0, running=1, mean_run_s=0.1)
        assert (known.desired, known.create) == (3, 2)
        assert (unknown.desired, unknown.create, unknown.needed) == (2, 1, 3)
        assert "d=0.1s (unmeasured: T)" in unknown.reason
        assert "slow start until d is measured: ≤ 2·R = 2" in unknown.reason

    def test_target_wait_setting_is_used(self) -> None:
        settings = SchedulerSettings(target_wait_s=0.5)
        decided = decide_one(arrival_rate_per_s=20.0, running=8, mean_run_s=None, settings=settings)
        assert decided.desired == math.ceil(20 * 0.5 / 0.8)

    def test_slow_start_doubles_what_is_up(self) -> None:
        # the first second of a busy short action: a guess of d = T must not take the cluster
        burst = {"pending": 200, "arrival_rate_per_s": 50.0, "mean_run_s": None}
        assert decide_one(running=0, creating=1, **burst).create == 0
        assert decide_one(running=1, creating=1, **burst).desired == 2
        assert decide_one(running=4, **burst).desired == 8
        assert decide_one(running=4, **{**burst, "mean_run_s": 0.1}).desired == 50


class TestRule8ScaleInWithoutAStableWindow:
    @pytest.mark.parametrize(
        "kw",
        [
            {"running": 5},  # idle
            {"running": 5, "in_flight": 4},  # finishing its last runs
            {"running": 20, "arrival_rate_per_s": 1.0},  # steady, far too many
            {"running": 20, "limit": 3, "pending": 100},  # limit lowered under it
        ],
    )
    def test_never_removes(self, kw: dict[str, Any]) -> None:
        decided = decide_one(**kw)
        assert decided.create == 0
        assert decided.desired < kw["running"]

    def test_idle_wants_nothing(self) -> None:
        decided = decide_one(running=5)
        assert (decided.rule, decided.desired, decided.create, decided.wait_s) == ("idle", 0, 0, 0)


class TestGuards:
    def test_nothing_at_all(self) -> None:
        decided = decide_one()
        assert (decided.rule, decided.create, decided.desired, decided.wait_s) == (
            "idle",
            0,
            0,
            0.0,
        )

    def test_zero_run_time_is_floored(self) -> None:
        decided = decide_one(pending=10, arrival_rate_per_s=1000.0, running=1, mean_run_s=0.0)
        assert decided.create == 0
        assert f"d={MIN_RUN_S:.4g}s" in decided.reason

    @pytest.mark.parametrize("bad", [-0.5, math.nan, math.inf])
    def test_unusable_run_time_is_unmeasured(self, bad: float) -> None:
        decided = decide_one(arrival_rate_per_s=20.0, running=2, mean_run_s=bad)
        assert decided.desired == 3
        assert "unmeasured" in decided.reason

    @pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
    def test_unusable_cold_start_is_assumed(self, bad: float) -> None:
        decided = decide_one(pending=30, arrival_rate_per_s=1.0, running=1, cold_start_s=bad)
        assert "C=0.7s (assumed)" in decided.reason

    def test_zero_cold_start_is_a_measurement(self) -> None:
        # horizon = max(T, 0) = T: a 0.61 s drain is too slow
        decided = decide_one(pending=30, arrival_rate_per_s=1.0, running=1, cold_start_s=0.0)
        assert decided.rule == "burst-drain"

    @pytest.mark.parametrize("rate", [-5.0, math.nan, math.inf, -math.inf])
    def test_unusable_arrival_rate_is_zero(self, rate: float) -> None:
        decided = decide_one(arrival_rate_per_s=rate, running=1)
        assert (decided.rule, decided.create) == ("idle", 0)

    def test_rate_equal_to_capacity(self) -> None:
        # u = 1 and λ = μ: μ - λ = 0 would divide by zero in rule 3; rule 2 applies instead
        settings = SchedulerSettings(target_utilization=1.0)
        decided = decide_one(
            pending=5, arrival_rate_per_s=50.0, running=1, mean_run_s=0.02, settings=settings
        )
        assert decided.rule == "sustained"
        assert decided.create == 0  # 1 container: W = 0.1 s = T, ceil(50·0.02/1) = 1

    def test_negative_counts_are_zero(self) -> None:
        decided = decide_one(pending=-3, in_flight=-1, running=-2, creating=-1, limit=-4)
        assert (decided.rule, decided.create, decided.desired, decided.wait_s) == (
            "idle",
            0,
            0,
            0.0,
        )

    def test_zero_concurrency_counts_as_one(self) -> None:
        decided = decide_one(arrival_rate_per_s=100.0, running=1, concurrency=0)
        assert decided.desired == 3

    def test_zero_partitions_caps_at_zero(self) -> None:
        decided = decide_one(pending=3, partitions=0)
        assert (decided.rule, decided.create) == ("capped-partitions", 0)

    def test_negative_free_slots(self) -> None:
        decided = decide_one(pending=3, free_slots=-7)
        assert decided.create == 0

    def test_huge_numbers_do_not_overflow(self) -> None:
        decided = decide_one(pending=10**18, arrival_rate_per_s=1e300, running=1, mean_run_s=1e6)
        assert decided.create == 49
        assert decided.throttled

    def test_empty_snapshot(self) -> None:
        assert decide(Snapshot(0.0, (), 10), DEFAULTS) == Decision(())

    def test_duplicate_action_rejected(self) -> None:
        with pytest.raises(ValueError, match="more than once"):
            decide_many([state("guest/a"), state("guest/a")], free_slots=1)

    def test_for_action_unknown(self) -> None:
        assert decide_many([state("guest/a")], free_slots=1).for_action("guest/b") is None


class TestReason:
    def test_reason_is_one_line_with_the_inputs(self) -> None:
        decided = decide_one(pending=3, arrival_rate_per_s=60.0, running=1, creating=1)
        assert "\n" not in decided.reason
        for part in ("P=3", "F=0", "λ=60/s", "R=1", "K=1", "c=1", "d=0.02s", "C=0.7s", "μ=100/s"):
            assert part in decided.reason
        assert decided.reason.startswith(decided.rule + ":")
        assert "desired 2, create 0" in decided.reason

    def test_is_deterministic(self) -> None:
        states = [state(f"guest/x{i}", pending=i) for i in range(6)]
        assert decide_many(states, free_slots=2) == decide_many(states, free_slots=2)


# --- property-style: random snapshots, invariants that must always hold ---------------


def random_state(rng: random.Random, name: str) -> ActionState:
    def maybe(value: float, chance: float = 0.7) -> float:
        return value if rng.random() < chance else 0.0

    return state(
        name,
        pending=int(maybe(rng.choice([1, 5, 50, 5000]) * rng.random(), 0.6)),
        in_flight=int(maybe(rng.randint(1, 20), 0.3)),
        arrival_rate_per_s=maybe(rng.choice([0.5, 10.0, 1000.0]) * rng.random(), 0.6),
        running=int(maybe(rng.randint(1, 30), 0.6)),
        creating=int(maybe(rng.randint(1, 5), 0.2)),
        mean_run_s=rng.choice([None, 0.0, 0.002, 0.02, 0.3, 2.0, rng.uniform(0.001, 5)]),
        concurrency=rng.choice([1, 1, 1, 2, 8]),
        cold_start_s=rng.choice([None, 0.0, 0.05, 0.7, rng.uniform(0.1, 2)]),
        limit=rng.choice([0, 1, 3, 10, 50]),
        partitions=rng.choice([None, None, 0, 1, 4, 16]),
        throttled=rng.random() < 0.3,
        last_resize_s=rng.choice([None, 990.0, 900.0]),
    )


def run_s_used(s: ActionState, settings: SchedulerSettings) -> float:
    d = s.mean_run_s
    if d is None or not math.isfinite(d) or d < 0:
        return settings.target_wait_s
    return max(MIN_RUN_S, d)


@pytest.mark.parametrize("seed", range(6))
def test_invariants_over_random_snapshots(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(600):
        settings = SchedulerSettings(
            target_wait_s=rng.choice([0.05, 0.1, 0.5]),
            target_utilization=rng.choice([0.5, 0.8, 1.0]),
            max_wait_s=rng.choice([0.5, 10.0]),
            auto_partitions=rng.random() < 0.5,
            resize_cooldown_s=30.0,
        )
        states = [random_state(rng, f"guest/a{i}") for i in range(rng.randint(1, 7))]
        free_slots = rng.choice([0, 1, 2, 5, 20, 1000])
        snapshot = Snapshot(1000.0, tuple(states), free_slots)
        decision = decide(snapshot, settings)
        check_invariants(snapshot, decision, settings)
        assert decide(snapshot, settings) == decision


def check_invariants(snapshot: Snapshot, decision: Decision, settings: SchedulerSettings) -> None:
    assert [d.action for d in decision.actions] == [s.action for s in snapshot.actions]
    assert sum(d.create for d in decision.actions) <= snapshot.free_slots
    pairs = list(zip(snapshot.actions, decision.actions, strict=True))
    existing = {s.action: s.running + s.creating for s in snapshot.actions}
    for s, d in pairs:
        n = existing[s.action]
        assert d.create >= 0
        assert d.desired >= 0
        assert d.wait_s >= 0
        assert d.create == max(0, d.desired - n)
        assert d.desired <= s.limit or d.desired == 0
        if d.create:
            assert n + d.create <= s.limit
            assert s.partitions is None or n + d.create <= s.partitions
        if d.rule in ("burst-wait", "steady", "idle"):
            assert d.create == 0
        if d.rule == "poke":
            assert (d.create, n) == (1, 0)
        check_throttle(s, d, settings)
        check_resize(s, d, settings, snapshot.now_s)
        assert d.reason.startswith(f"{d.rule}:")
    capacity_bound = [d for _, d in pairs if d.rule == "capped-capacity"]
    slow_starting = any(run_s_used(s, settings) == settings.target_wait_s for s in snapshot.actions)
    if capacity_bound and not slow_starting:
        # work-conserving: slots were only refused because none were left (or because
        # they are kept for the fair share of an action still measuring its run time)
        assert sum(d.create for d in decision.actions) == snapshot.free_slots
    for short in capacity_bound:
        # rounds: nobody got more than one more than an action that was cut short
        assert all(d.create <= short.create + 1 for d in decision.actions)
    starved = [
        s
        for s, d in pairs
        if existing[s.action] == 0
        and (s.pending > 0 or s.in_flight > 0 or s.arrival_rate_per_s > 0)
        and d.create == 0
        and d.rule == "capped-capacity"
    ]
    if starved:
        # an active action with no container went without only because every slot went
        # to another action with no container, one each
        for s, d in pairs:
            assert d.create == 0 or (d.create == 1 and existing[s.action] == 0)


def check_throttle(s: ActionState, d: ActionDecision, settings: SchedulerSettings) -> None:
    """Rule 6 against the real ceiling: L, or min(L, partitions) when they cannot grow."""
    pending = max(0, s.pending)
    ceiling = s.limit
    if s.partitions is not None and not settings.auto_partitions:
        ceiling = min(ceiling, max(0, s.partitions))
    if pending == 0:
        wait_at_limit_s = 0.0
    elif ceiling <= 0:
        wait_at_limit_s = math.inf
    else:
        wait_at_limit_s = pending * run_s_used(s, settings) / (max(1, s.concurrency) * ceiling)
    if wait_at_limit_s > settings.max_wait_s:
        assert d.throttled
    elif wait_at_limit_s < settings.throttle_release_ratio * settings.max_wait_s:
        assert not d.throttled
    else:
        assert d.throttled == s.throttled


def check_resize(
    s: ActionState, d: ActionDecision, settings: SchedulerSettings, now_s: float
) -> None:
    if d.resize_partitions_to is None:
        return
    assert settings.auto_partitions
    assert s.partitions is not None
    assert s.partitions < d.resize_partitions_to <= s.limit
    assert s.last_resize_s is None or now_s - s.last_resize_s >= settings.resize_cooldown_s
    assert d.rule in ("capped-partitions", "capped-capacity")


def test_property_generator_reaches_every_rule() -> None:
    """The random snapshots above are only worth something if they hit every branch."""
    rng = random.Random(1234)
    seen: set[str] = set()
    resized = False
    for _ in range(2000):
        settings = SchedulerSettings(auto_partitions=True)
        states = [random_state(rng, f"guest/a{i}") for i in range(rng.randint(1, 7))]
        decision = decide(Snapshot(1000.0, tuple(states), rng.choice([1, 5, 1000])), settings)
        seen.update(d.rule for d in decision.actions)
        resized = resized or any(d.resize_partitions_to for d in decision.actions)
    assert seen == {
        "poke",
        "sustained",
        "burst-wait",
        "burst-drain",
        "steady",
        "idle",
        "capped-limit",
        "capped-partitions",
        "capped-capacity",
    }
    assert resized


def test_action_state_shape_is_stable() -> None:
    """Other modules construct these positionally-by-name; renaming a field breaks them."""
    assert [f.name for f in dataclasses.fields(ActionState)] == [
        "action",
        "pending",
        "in_flight",
        "arrival_rate_per_s",
        "running",
        "creating",
        "mean_run_s",
        "concurrency",
        "cold_start_s",
        "limit",
        "partitions",
        "throttled",
        "last_resize_s",
        "stable_demand",
        "last_scale_in_s",
        "backlog_since_s",
    ]
    assert [f.name for f in dataclasses.fields(ActionDecision)] == [
        "action",
        "create",
        "desired",
        "throttled",
        "resize_partitions_to",
        "wait_s",
        "rule",
        "reason",
        "needed",
        "remove",
        "rejecting",
    ]


def test_throttle_uses_the_partition_ceiling_when_partitions_cannot_grow() -> None:
    settings = SchedulerSettings(max_wait_s=10.0)
    # d = 1 s, c = 1, P = 60: W at L=10 is 6 s (fine) but only 3 partitions can work: 20 s.
    state = ActionState(
        action="guest/k",
        pending=60,
        in_flight=0,
        arrival_rate_per_s=0.0,
        running=3,
        creating=0,
        mean_run_s=1.0,
        concurrency=1,
        cold_start_s=0.7,
        limit=10,
        partitions=3,
        throttled=False,
    )
    snapshot = Snapshot(now_s=0.0, actions=(state,), free_slots=100)
    assert decide(snapshot, settings).actions[0].throttled
    growable = SchedulerSettings(max_wait_s=10.0, auto_partitions=True, resize_cooldown_s=0.0)
    assert not decide(snapshot, growable).actions[0].throttled
