"""When an idle container leaves: keep-alive, scale-down delay, last-container retention."""

from __future__ import annotations

import pytest

from broker_sched.config import KeepAliveSettings, RetentionSettings
from broker_sched.invoker.retention import IdleTimes, may_leave

PLAIN = RetentionSettings()
KNATIVE = RetentionSettings(scale_down_delay_s=20.0, last_container_retention_s=60.0)


@pytest.mark.parametrize(
    ("idle_s", "others", "leaves"),
    [(9.9, 0, False), (10.0, 0, True), (10.0, 3, True), (0.0, 0, False)],
)
def test_by_default_an_idle_container_leaves_after_the_keep_alive(
    idle_s: float, others: int, leaves: bool
) -> None:
    assert (
        may_leave(PLAIN, keep_alive_s=10.0, idle_s=idle_s, action_idle_s=idle_s, others=others)
        is leaves
    )


@pytest.mark.parametrize(
    ("idle_s", "action_idle_s", "others", "leaves"),
    [
        (15.0, 15.0, 2, False),  # within the scale-down delay: nobody leaves
        (25.0, 19.9, 2, False),  # the action had work 19.9 s ago
        (25.0, 25.0, 2, True),  # past the delay and the keep-alive, not the last
        (25.0, 25.0, 0, False),  # the last one is retained
        (59.9, 59.9, 0, False),
        (60.0, 60.0, 0, True),  # until its retention ends
        (12.0, 30.0, 1, True),
    ],
)
def test_knatives_delay_and_last_container_retention(
    idle_s: float, action_idle_s: float, others: int, leaves: bool
) -> None:
    assert (
        may_leave(
            KNATIVE, keep_alive_s=10.0, idle_s=idle_s, action_idle_s=action_idle_s, others=others
        )
        is leaves
    )


def test_a_retention_shorter_than_the_keep_alive_changes_nothing() -> None:
    short = RetentionSettings(last_container_retention_s=2.0)
    assert not may_leave(short, keep_alive_s=10.0, idle_s=5.0, action_idle_s=5.0, others=0)
    assert may_leave(short, keep_alive_s=10.0, idle_s=10.0, action_idle_s=10.0, others=0)


def test_idle_times_learn_an_actions_keep_alive_from_the_gaps_between_its_runs() -> None:
    learned = KeepAliveSettings(policy="learned", min_samples=5)
    times = IdleTimes(learned, fixed_keep_alive_s=10.0)
    assert times.keep_alive_s("a") == 10.0  # nothing learned: the fixed keep-alive
    for i in range(6):
        times.observe("a", 30.0 * i)
        times.observe("a", 30.0 * i)  # seen again at the next check: no new gap
    windows = times.windows("a")
    assert "histogram of 5" in windows.reason
    assert 30.0 < times.keep_alive_s("a") < 30.0 * 1.25 * 1.1 + 1e-9
    assert times.keep_alive_s("b") == 10.0  # per action
