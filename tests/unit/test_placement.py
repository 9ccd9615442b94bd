"""Placement: paused container first, else the roomiest invoker that fits; heartbeat expiry."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from broker_sched.scheduler.placement import InvokerView, Placement, live_invokers, place

ACTION = "guest/hello"


def view(
    invoker_id: str, slots: int = 5, memory_mb: int = 4096, paused: dict[str, int] | None = None
) -> InvokerView:
    return InvokerView(invoker_id, slots, memory_mb, paused or {})


class TestPlace:
    def test_no_invokers(self) -> None:
        assert place([], ACTION, 256, random.Random(0)) is None

    def test_most_free_slots_wins(self) -> None:
        invokers = [view("a", slots=2), view("b", slots=7), view("c", slots=3)]
        assert place(invokers, ACTION, 256, random.Random(0)) == Placement("b", resume=False)

    def test_memory_breaks_slot_ties(self) -> None:
        invokers = [view("a", slots=4, memory_mb=1024), view("b", slots=4, memory_mb=2048)]
        assert place(invokers, ACTION, 256, random.Random(0)) == Placement("b")

    def test_slots_count_before_memory(self) -> None:
        invokers = [view("a", slots=5, memory_mb=512), view("b", slots=4, memory_mb=8192)]
        assert place(invokers, ACTION, 256, random.Random(0)) == Placement("a")

    @pytest.mark.parametrize(
        ("slots", "memory_mb", "fits"),
        [
            (1, 256, True),  # exactly enough of both
            (0, 8192, False),  # no slot
            (5, 255, False),  # one MB short
            (-1, 8192, False),  # over-committed invoker
        ],
    )
    def test_only_invokers_that_fit(self, slots: int, memory_mb: int, fits: bool) -> None:
        chosen = place([view("a", slots, memory_mb)], ACTION, 256, random.Random(0))
        assert chosen == (Placement("a") if fits else None)

    def test_roomier_invoker_that_cannot_fit_is_skipped(self) -> None:
        invokers = [view("big", slots=10, memory_mb=128), view("small", slots=1, memory_mb=512)]
        assert place(invokers, ACTION, 256, random.Random(0)) == Placement("small")

    def test_paused_container_of_same_action_first(self) -> None:
        invokers = [view("roomy", slots=10), view("full", slots=0, memory_mb=0, paused={ACTION: 1})]
        assert place(invokers, ACTION, 256, random.Random(0)) == Placement("full", resume=True)

    def test_paused_container_of_other_action_ignored(self) -> None:
        invokers = [view("a", slots=1, paused={"guest/other": 3}), view("b", slots=4)]
        assert place(invokers, ACTION, 256, random.Random(0)) == Placement("b", resume=False)

    def test_zero_paused_entry_ignored(self) -> None:
        invokers = [view("a", slots=0, paused={ACTION: 0})]
        assert place(invokers, ACTION, 256, random.Random(0)) is None

    def test_roomiest_of_invokers_with_paused_container(self) -> None:
        invokers = [
            view("a", slots=1, paused={ACTION: 2}),
            view("b", slots=3, paused={ACTION: 1}),
            view("c", slots=9),
        ]
        assert place(invokers, ACTION, 256, random.Random(0)) == Placement("b", resume=True)

    def test_ties_broken_randomly(self) -> None:
        invokers = [view("a"), view("b"), view("c"), view("d", slots=1)]
        rng = random.Random(7)
        picks = Counter(
            chosen.invoker_id
            for _ in range(3000)
            if (chosen := place(invokers, ACTION, 256, rng)) is not None
        )
        assert set(picks) == {"a", "b", "c"}
        assert all(800 < count < 1200 for count in picks.values())

    def test_same_seed_same_choice_whatever_the_input_order(self) -> None:
        invokers = [view(name) for name in "abcdef"]
        forward = [place(invokers, ACTION, 256, random.Random(3)) for _ in range(5)]
        backward = [place(invokers[::-1], ACTION, 256, random.Random(3)) for _ in range(5)]
        assert forward == backward

    def test_single_best_does_not_consume_randomness(self) -> None:
        rng = random.Random(11)
        state = rng.getstate()
        place([view("a", slots=2), view("b", slots=1)], ACTION, 256, rng)
        assert rng.getstate() == state

    def test_accepts_any_iterable(self) -> None:
        chosen = place((view(name) for name in ["only"]), ACTION, 256, random.Random(0))
        assert chosen == Placement("only")


class TestLiveInvokers:
    @pytest.mark.parametrize(
        ("last_beat_s", "live"),
        [
            (100.0, True),  # just now
            (97.0, True),  # exactly 3 beats of 1 s: still live
            (96.999, False),  # a moment more: expired
            (50.0, False),
            (101.0, True),  # clock skew: a beat "from the future" is live
        ],
    )
    def test_expiry_after_missed_beats(self, last_beat_s: float, live: bool) -> None:
        result = live_invokers({"inv": last_beat_s}, now_s=100.0, interval_s=1.0, expiry_beats=3)
        assert result == (["inv"] if live else [])

    def test_keeps_order_and_filters_each(self) -> None:
        beats = {"a": 10.0, "b": 1.0, "c": 9.5}
        assert live_invokers(beats, now_s=10.0, interval_s=0.5, expiry_beats=2) == ["a", "c"]

    def test_none(self) -> None:
        assert live_invokers({}, now_s=1.0, interval_s=1.0, expiry_beats=3) == []
