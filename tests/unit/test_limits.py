"""Namespace limits: a sliding minute of starts and a count of running activations."""

from __future__ import annotations

from broker_sched.limits import NamespaceLimiter, share_of


def test_the_minute_slides_and_says_when_the_oldest_start_leaves_it() -> None:
    limiter = NamespaceLimiter(per_minute=2, concurrent=10)
    assert limiter.start("guest", "a", 0.0, 1e9) is None
    assert limiter.start("guest", "b", 20.0, 1e9) is None

    refusal = limiter.start("guest", "c", 30.5, 1e9)
    assert refusal is not None
    assert refusal.retry_after_s == 30
    assert "2 invocations per minute" in refusal.reason

    assert limiter.start("guest", "c", 60.0, 1e9) is None, "the start at 0 s has left"
    assert limiter.start("guest", "d", 61.0, 1e9) is not None


def test_a_refused_call_does_not_count() -> None:
    limiter = NamespaceLimiter(per_minute=1, concurrent=10)
    assert limiter.start("guest", "a", 0.0, 1e9) is None
    for second in range(1, 59):
        assert limiter.start("guest", "x", float(second), 1e9) is not None
    assert limiter.start("guest", "b", 60.0, 1e9) is None


def test_concurrency_counts_until_finished_or_the_deadline() -> None:
    limiter = NamespaceLimiter(per_minute=100, concurrent=2)
    assert limiter.start("guest", "a", 0.0, 10.0) is None
    assert limiter.start("guest", "b", 0.0, 5.0) is None

    refusal = limiter.start("guest", "c", 1.0, 11.0)
    assert refusal is not None
    assert refusal.retry_after_s == 1

    limiter.finish("guest", "a")
    assert limiter.start("guest", "c", 1.0, 11.0) is None
    assert limiter.start("guest", "d", 2.0, 12.0) is not None
    assert limiter.start("guest", "d", 5.0, 15.0) is None, "b's deadline passed"
    assert sorted(limiter.running("guest")) == ["c", "d"]


def test_namespaces_have_separate_budgets() -> None:
    limiter = NamespaceLimiter(per_minute=1, concurrent=1)
    assert limiter.start("guest", "a", 0.0, 10.0) is None
    assert limiter.start("other", "b", 0.0, 10.0) is None
    assert limiter.start("guest", "c", 0.0, 10.0) is not None
    limiter.finish("nobody", "x")


def test_three_controllers_admit_their_shares_of_a_limit() -> None:
    """60 a minute through three controllers: 20 each, 60 in all, never more."""
    limiters = [NamespaceLimiter(per_minute=60, concurrent=1000) for _ in range(3)]
    admitted = 0
    for index in range(100):
        limiter = limiters[index % 3]
        if limiter.start("guest", f"t{index}", index * 0.5, 1e9, controllers=3) is None:
            admitted += 1
    assert admitted == 60
    refusal = limiters[0].start("guest", "late", 50.0, 1e9, controllers=3)
    assert refusal is not None
    assert "3 controllers share it" in refusal.reason


def test_a_share_is_never_below_one() -> None:
    assert share_of(2, 3) == 1
    assert share_of(60, 3) == 20
    assert share_of(61, 3) == 21
    assert share_of(10, 0) == 10
