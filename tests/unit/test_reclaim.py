"""A full cluster: fair shares, LRU eviction, shedding, rejection, and central scale-in."""

from __future__ import annotations

import random
from typing import Any

import pytest
from action_states import state

from broker_sched.config import SchedulerSettings
from broker_sched.scheduler.decision import Snapshot, decide
from broker_sched.scheduler.rates import WindowMax
from broker_sched.scheduler.reclaim import (
    Claim,
    IdleContainers,
    Reclaim,
    fair_shares,
    reclaim,
)

DEFAULTS = SchedulerSettings()


class TestFairShares:
    @pytest.mark.parametrize(
        ("wanted", "capacity", "shares"),
        [
            ([10, 10], 10, [5, 5]),
            ([2, 10, 10], 10, [2, 4, 4]),
            ([1, 1, 1], 2, [1, 1, 0]),
            ([0, 5], 3, [0, 3]),
            ([3, 3], 100, [3, 3]),
            ([], 5, []),
            ([4, 4, 4], 0, [0, 0, 0]),
        ],
    )
    def test_water_filling(self, wanted: list[int], capacity: int, shares: list[int]) -> None:
        assert fair_shares(wanted, capacity) == shares

    @pytest.mark.parametrize("seed", range(20))
    def test_max_min_properties(self, seed: int) -> None:
        rng = random.Random(seed)
        wanted = [rng.choice([0, 1, 3, 20, 100]) for _ in range(rng.randint(1, 8))]
        capacity = rng.randint(0, 150)
        shares = fair_shares(wanted, capacity)
        assert sum(shares) == min(capacity, sum(wanted))
        assert all(0 <= s <= w for s, w in zip(shares, wanted, strict=True))
        unmet = [s for s, w in zip(shares, wanted, strict=True) if s < w]
        # nobody below its demand has more than one less than anybody else
        assert not unmet or max(shares) <= min(unmet) + 1


def reclaim_in(
    claims: list[Claim], idle: list[IdleContainers], free_slots: int, **kw: Any
) -> Reclaim:
    """Reclaim with the shares and capacity the decision would pass."""
    capacity = free_slots + sum(claim.existing for claim in claims)
    capacity += sum(g.count for g in idle if g.action not in {c.action for c in claims})
    shares = fair_shares([claim.wanted for claim in claims], capacity)
    return reclaim(claims, idle, shares=shares, capacity=capacity, free_slots=free_slots, **kw)


class TestReclaim:
    def test_idle_containers_of_others_are_evicted_least_recently_used_first(self) -> None:
        starved = Claim("guest/new", existing=0, wanted=1, granted=0, needed=1)
        idle = [
            IdleContainers("guest/old", "inv0", 2, idle_s=3.0),
            IdleContainers("guest/older", "inv1", 1, idle_s=9.0),
        ]
        result = reclaim_in([starved], idle, free_slots=0)
        assert [(e.action, e.invoker_id, e.count) for e in result.evictions] == [
            ("guest/older", "inv1", 1)
        ]
        assert "LRU" in result.evictions[0].reason
        assert result.room

    def test_an_action_keeps_the_idle_containers_its_demand_needs(self) -> None:
        starved = Claim("guest/new", existing=0, wanted=4, granted=0, needed=4)
        busy = Claim("guest/busy", existing=3, wanted=3, granted=0, needed=2)
        idle = [IdleContainers("guest/busy", "inv0", 2, idle_s=5.0)]
        result = reclaim_in([starved, busy], idle, free_slots=0)
        assert [e.count for e in result.evictions] == [1]

    def test_slots_being_freed_are_not_reclaimed_twice(self) -> None:
        starved = Claim("guest/new", existing=0, wanted=1, granted=0, needed=1)
        idle = [IdleContainers("guest/old", "inv0", 5, idle_s=3.0)]
        result = reclaim_in([starved], idle, free_slots=0, freeing_slots=1)
        assert result.evictions == ()
        assert result.room

    def test_an_action_above_its_share_sheds_one_for_an_action_with_none(self) -> None:
        greedy = Claim("guest/greedy", existing=10, wanted=10, granted=0, needed=10)
        starved = Claim("guest/new", existing=0, wanted=5, granted=0, needed=5)
        result = reclaim_in([greedy, starved], [], free_slots=0)
        assert result.evictions == ()
        assert result.shed == {"guest/greedy": 1}
        assert "above fair share" in result.notes["guest/greedy"]
        assert "below fair share 5" in result.notes["guest/new"]

    def test_busy_containers_are_not_shed_for_an_action_that_has_one(self) -> None:
        greedy = Claim("guest/greedy", existing=9, wanted=10, granted=0, needed=9)
        short = Claim("guest/short", existing=1, wanted=5, granted=0, needed=1)
        result = reclaim_in([greedy, short], [], free_slots=0)
        assert result.shed == {}
        assert "below fair share 5" in result.notes["guest/short"]

    def test_a_recent_shed_waits_for_the_interval(self) -> None:
        greedy = Claim("guest/greedy", existing=10, wanted=10, granted=0, needed=10, may_shed=False)
        starved = Claim("guest/new", existing=0, wanted=5, granted=0, needed=5)
        assert reclaim_in([greedy, starved], [], free_slots=0).shed == {}

    def test_no_room_when_every_slot_is_one_busy_container(self) -> None:
        full = [Claim(f"guest/a{i}", existing=1, wanted=1, granted=0, needed=1) for i in range(4)]
        starved = Claim("guest/new", existing=0, wanted=1, granted=0, needed=1)
        result = reclaim_in([*full, starved], [], free_slots=0)
        # four slots, five actions: the newcomer's fair share is 0 and nothing can be shed
        assert not result.room
        assert result.evictions == ()
        assert result.shed == {}

    def test_containers_between_two_runs_are_not_evicted(self) -> None:
        starved = Claim("guest/new", existing=0, wanted=1, granted=0, needed=1)
        idle = [IdleContainers("guest/old", "inv0", 2, idle_s=0.5)]
        assert reclaim_in([starved], idle, free_slots=0, min_idle_s=2.0).evictions == ()
        assert len(reclaim_in([starved], idle, free_slots=0, min_idle_s=0.5).evictions) == 1

    def test_no_eviction_while_free_slots_are_left(self) -> None:
        starved = Claim("guest/new", existing=1, wanted=9, granted=2, needed=3)
        idle = [IdleContainers("guest/old", "inv0", 2, idle_s=30.0)]
        assert reclaim_in([starved], idle, free_slots=3).evictions == ()

    def test_a_starved_action_is_never_its_own_victim(self) -> None:
        starved = Claim("guest/new", existing=0, wanted=2, granted=0, needed=2)
        idle = [IdleContainers("guest/new", "inv0", 1, idle_s=30.0)]
        assert reclaim_in([starved], idle, free_slots=0).evictions == ()


class TestDecisionInAFullCluster:
    def test_a_newcomer_with_backlog_gets_room_from_idle_containers(self) -> None:
        idle = (IdleContainers("guest/idle", "inv0", 3, idle_s=4.0),)
        snapshot = Snapshot(
            10.0,
            (state("guest/idle", running=3), state("guest/new", pending=1)),
            free_slots=0,
            idle=idle,
        )
        decision = decide(snapshot, DEFAULTS)
        assert [(e.action, e.count) for e in decision.evictions] == [("guest/idle", 1)]
        new = decision.for_action("guest/new")
        assert new is not None
        assert not new.rejecting
        assert new.create == 0
        assert "below fair share" in new.reason

    def test_no_room_rejects_an_action_without_container(self) -> None:
        busy = [state(f"guest/a{i}", running=1, in_flight=1) for i in range(3)]
        snapshot = Snapshot(10.0, (*busy, state("guest/new", pending=1)), free_slots=0)
        decision = decide(snapshot, DEFAULTS)
        assert not decision.room
        new = decision.for_action("guest/new")
        assert new is not None
        assert new.rejecting
        assert "rejecting" in new.reason
        assert not any(d.rejecting for d in decision.actions if d.action != "guest/new")


class TestCentralScaleIn:
    steady = {"running": 20, "arrival_rate_per_s": 50.0, "mean_run_s": 0.02}

    def one(self, settings: SchedulerSettings = DEFAULTS, **kw: Any) -> Any:
        decision = decide(Snapshot(100.0, (state("guest/a", **kw),), free_slots=100), settings)
        return decision.actions[0]

    def test_an_over_provisioned_action_shrinks_under_steady_traffic(self) -> None:
        # λ·d/u = 50·0.02/0.8 = 1.25 → 2 needed; over the window at most 3: halve 20 → 10
        decided = self.one(**self.steady, stable_demand=3)
        assert (decided.rule, decided.remove, decided.desired, decided.needed) == (
            "scale-in",
            10,
            10,
            2,
        )
        assert "stable demand 3" in decided.reason

    def test_down_to_the_stable_demand_when_that_is_within_the_rate(self) -> None:
        decided = self.one(**{**self.steady, "running": 5}, stable_demand=3)
        assert decided.remove == 2

    def test_nothing_before_the_window_is_full(self) -> None:
        assert self.one(**self.steady, stable_demand=None).remove == 0

    def test_not_while_a_backlog_waits_or_a_container_is_coming(self) -> None:
        assert self.one(**self.steady, stable_demand=3, pending=5).remove == 0
        assert self.one(**self.steady, stable_demand=3, creating=1).remove == 0

    def test_at_most_once_per_interval(self) -> None:
        assert self.one(**self.steady, stable_demand=3, last_scale_in_s=99.0).remove == 0
        assert self.one(**self.steady, stable_demand=3, last_scale_in_s=97.0).remove == 10

    def test_never_below_one_scale_to_zero_is_the_keep_alive(self) -> None:
        decided = self.one(running=2, stable_demand=0)
        assert decided.remove == 1


class TestWindowMax:
    def test_none_until_the_window_is_covered_then_the_max(self) -> None:
        window = WindowMax(10.0)
        window.add(0.0, 5)
        window.add(4.0, 2)
        assert window.value(9.0) is None
        assert window.value(10.0) == 5
        window.add(12.0, 1)
        assert window.value(12.0) == 2
        assert window.value(30.0) == 0

    def test_rejects_a_bad_window(self) -> None:
        with pytest.raises(ValueError, match="window_s must be a positive number"):
            WindowMax(0.0)
