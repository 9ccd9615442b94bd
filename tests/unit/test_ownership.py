"""Ownership bookkeeping: shards, fair shares, lease plans, validity, live peers."""

from __future__ import annotations

from broker_sched.scheduler.ownership import (
    SEEK_EVERY_ROUNDS,
    VALID_FRACTION,
    HeldLease,
    fair_share,
    gone_for,
    live_peers,
    owned,
    plan_leases,
    preference,
    shard_of,
    should_seek,
)

SHARDS = 32


def test_an_action_has_the_same_shard_everywhere() -> None:
    assert shard_of("guest/hello", SHARDS) == shard_of("guest/hello", SHARDS)
    assert {shard_of(f"guest/a{i}", SHARDS) for i in range(500)} == set(range(SHARDS))


def test_fair_share_covers_every_shard() -> None:
    for controllers in range(1, 10):
        assert fair_share(SHARDS, controllers) * controllers >= SHARDS
    assert fair_share(SHARDS, 0) == SHARDS


def test_preferences_are_stable_and_differ_between_holders() -> None:
    assert preference("a", SHARDS) == preference("a", SHARDS)
    assert sorted(preference("a", SHARDS)) == list(range(SHARDS))
    assert preference("a", SHARDS) != preference("b", SHARDS)


def test_a_lone_controller_tries_every_shard() -> None:
    plan = plan_leases(set(), holder="a", shards=SHARDS, controllers=1)
    assert plan.keep == ()
    assert plan.release == ()
    assert set(plan.candidates) == set(range(SHARDS))
    assert plan.room == SHARDS


def test_a_controller_over_its_share_releases_its_least_preferred() -> None:
    plan = plan_leases(set(range(SHARDS)), holder="a", shards=SHARDS, controllers=3)
    assert len(plan.keep) == 11
    assert len(plan.release) == 21
    assert plan.room == 0
    assert list(plan.keep) == preference("a", SHARDS)[:11]


def test_a_controller_under_its_share_tries_the_shards_it_lacks() -> None:
    plan = plan_leases({0, 1}, holder="a", shards=SHARDS, controllers=2)
    assert set(plan.keep) == {0, 1}
    assert plan.room == 14
    assert 0 not in plan.candidates
    assert len(plan.candidates) == SHARDS - 2


def test_plans_of_three_controllers_leave_no_shard_without_a_holder() -> None:
    """Rounds of taking in turn, each taking only what nobody holds, end with every
    shard held and nobody over a fair share."""
    holders = ["a", "b", "c"]
    held: dict[str, set[int]] = {h: set() for h in holders}
    for _ in range(3):
        for holder in holders:
            plan = plan_leases(held[holder], holder=holder, shards=SHARDS, controllers=3)
            taken_by_others = set().union(*(held[h] for h in holders if h != holder))
            free = [s for s in plan.candidates if s not in taken_by_others]
            held[holder] = set(plan.keep) | set(free[: plan.room])
    assert set().union(*held.values()) == set(range(SHARDS))
    assert all(len(shards) <= 11 for shards in held.values())


def test_a_lease_is_acted_on_only_within_the_safe_part_of_its_ttl() -> None:
    held = {1: HeldLease(token=7, sent_s=100.0), 2: HeldLease(token=3, sent_s=98.0)}
    assert owned(held, 100.0 + 2.0 * VALID_FRACTION - 0.01, 2.0) == {1}
    assert owned(held, 100.0 + 2.0 * VALID_FRACTION + 0.01, 2.0) == frozenset()


def test_live_peers_are_those_heard_from_lately() -> None:
    assert live_peers({"a": 10.0, "b": 8.0}, 11.0, 1.5) == {"a"}


def test_ids_silent_past_the_grace_are_gone() -> None:
    assert gone_for({"a": 10.0, "b": 40.0, "c": 49.0}, 50.0, 30.0) == ["a"]


def test_free_shards_are_sought_after_a_change_or_now_and_then() -> None:
    assert not should_seek(room=0, round_index=0, now_s=1.0, seek_until_s=5.0)
    assert should_seek(room=1, round_index=3, now_s=1.0, seek_until_s=5.0)
    assert not should_seek(room=1, round_index=3, now_s=6.0, seek_until_s=5.0)
    assert should_seek(room=1, round_index=SEEK_EVERY_ROUNDS, now_s=6.0, seek_until_s=5.0)
