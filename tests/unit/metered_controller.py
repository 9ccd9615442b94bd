"""A controller that is not serving but has seen everything the metrics read: tracked
actions with a backlog, heartbeats of invokers holding their containers, decisions by
rule, reasoned timeline events and results."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from broker_sched.config import load_settings
from broker_sched.metrics import ActivationTimes
from broker_sched.model import Action, ActivationResult, Heartbeat, Start, Status
from broker_sched.scheduler.controller import Controller
from transports.base import Backlog
from transports.memory import MemoryTransport


def controller_with(action_count: int, invoker_count: int = 3) -> Controller:
    """A controller (not serving) that tracks ``action_count`` actions, each with
    containers on every invoker, and has decided and acted for each."""
    actions = {
        a.fqn: a
        for a in (Action(name=f"action-{n}", namespace="team") for n in range(action_count))
    }
    settings = load_settings(transport="memory")
    controller = Controller(transport=MemoryTransport(), settings=settings, actions=actions)
    monitor = controller.monitor
    assert monitor is not None
    for action in actions.values():
        stats = monitor.track(action)
        stats.backlog = Backlog(pending=2, in_flight=1)
        stats.backlog_since_s = time.monotonic() - 1.0
        stats.arrivals.record(time.monotonic())
        monitor.rules_decided.update(["sustained", "steady", "burst-drain"])
        controller.timeline.record("container_requested", action.fqn, reason="sustained: ...")
    for n in range(invoker_count):
        controller.cluster.on_heartbeat(
            Heartbeat(
                invoker_id=f"invoker-{n}",
                free_slots=4,
                free_memory_mb=1024,
                containers=dict.fromkeys(actions, 2),
                paused=dict.fromkeys(actions, 1),
            )
        )
    times = ActivationTimes(CollectorRegistry())
    for start in Start:
        times.observe(
            ActivationResult(
                activation_id=f"a-{start}",
                namespace="team",
                action="action-0",
                status=Status.SUCCESS,
                start=start,
                wait_ms=12.0,
            )
        )
    return controller
