"""The baseline's probe sequence: home first, a coprime step, every invoker once."""

from __future__ import annotations

import math
import random

import pytest

from broker_sched.scheduler.sharding import (
    choose_invoker,
    java_string_hash,
    pairwise_coprime_steps,
    probe_sequence,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("a", 97), ("hello world", 1794106052), ("polygenelubricants", -(2**31))],
)
def test_java_string_hash_matches_java(text: str, expected: int) -> None:
    assert java_string_hash(text) == expected


@pytest.mark.parametrize(
    ("n", "steps"),
    [(1, [1]), (2, [1]), (5, [1, 2, 3]), (10, [1, 3, 7]), (12, [1, 5, 7, 11])],
)
def test_pairwise_coprime_steps(n: int, steps: list[int]) -> None:
    assert pairwise_coprime_steps(n) == steps


@pytest.mark.parametrize("n", range(1, 40))
def test_steps_are_coprime_with_n_and_each_other(n: int) -> None:
    steps = pairwise_coprime_steps(n)
    assert all(math.gcd(s, n) == 1 for s in steps)
    assert all(math.gcd(a, b) == 1 for a in steps for b in steps if a != b)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 16, 100])
def test_probe_visits_every_invoker_once_starting_home(n: int) -> None:
    for action in (f"guest/a{i}" for i in range(50)):
        sequence = probe_sequence(action, n)
        assert sorted(sequence) == list(range(n))
        assert sequence[0] == abs(java_string_hash(action)) % n


def test_probe_is_deterministic_and_empty_without_invokers() -> None:
    assert probe_sequence("guest/x", 7) == probe_sequence("guest/x", 7)
    assert probe_sequence("guest/x", 0) == []


def test_choose_takes_the_first_probe_with_a_free_slot() -> None:
    sequence = probe_sequence("guest/x", 5)
    free = [1] * 5
    free[sequence[0]] = 0
    choice = choose_invoker("guest/x", free, [True] * 5, random.Random(1))
    assert choice is not None
    assert choice.index == sequence[1]
    assert not choice.overloaded


def test_choose_skips_unhealthy_invokers() -> None:
    sequence = probe_sequence("guest/x", 4)
    healthy = [True] * 4
    healthy[sequence[0]] = False
    choice = choose_invoker("guest/x", [3] * 4, healthy, random.Random(1))
    assert choice is not None
    assert choice.index == sequence[1]


def test_all_full_overloads_a_random_healthy_invoker() -> None:
    healthy = [True, False, True, False]
    picks = {
        choice.index
        for seed in range(30)
        if (choice := choose_invoker("guest/x", [0] * 4, healthy, random.Random(seed)))
    }
    assert picks == {0, 2}
    choice = choose_invoker("guest/x", [0] * 4, healthy, random.Random(0))
    assert choice is not None
    assert choice.overloaded


def test_no_healthy_invoker_means_no_choice() -> None:
    assert choose_invoker("guest/x", [5, 5], [False, False], random.Random(0)) is None
