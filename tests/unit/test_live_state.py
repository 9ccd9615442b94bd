"""What the live view's page is given: the numbers of /metrics per action and invoker,
each action's last decision, and the latest reasoned events."""

from __future__ import annotations

from metered_controller import controller_with

from broker_sched.live import RECENT_EVENTS, state
from broker_sched.scheduler.decision import ActionDecision, Decision


def test_each_action_has_its_backlog_containers_and_last_decision() -> None:
    controller = controller_with(3, invoker_count=2)
    assert controller.monitor is not None
    controller.monitor.last_decision = Decision(
        (
            ActionDecision(
                action="team/action-1",
                create=0,
                desired=4,
                throttled=False,
                resize_partitions_to=None,
                wait_s=0.1,
                rule="sustained",
                reason="sustained: why",
            ),
        )
    )

    shown = state(controller)

    actions = {row["action"]: row for row in shown["actions"]}
    assert sorted(actions) == ["team/action-0", "team/action-1", "team/action-2"]
    row = actions["team/action-1"]
    assert (row["backlog_pending"], row["backlog_in_flight"], row["throttled"]) == (2, 1, 0)
    assert row["containers"] == {"running": 2, "paused": 2, "creating": 0}
    assert (row["rule"], row["reason"]) == ("sustained", "sustained: why")
    assert "rule" not in actions["team/action-0"]
    assert [invoker["invoker"] for invoker in shown["invokers"]] == ["invoker-0", "invoker-1"]
    assert shown["invokers"][0]["containers"]["team/action-2"] == {"running": 1, "paused": 1}
    assert shown["decisions_total"] == {"burst-drain": 3, "steady": 3, "sustained": 3}


def test_the_latest_reasoned_events_come_first_and_are_bounded() -> None:
    controller = controller_with(RECENT_EVENTS + 5)
    controller.timeline.record("container_created", "team/action-0")

    events = state(controller)["events"]

    assert len(events) == RECENT_EVENTS
    assert events[0]["action"] == f"team/action-{RECENT_EVENTS + 4}"
    assert all(event["reason"] == "sustained: ..." for event in events)
