"""One action's tick measurements with test defaults: idle, 20 ms runs, 0.7 s cold starts."""

from __future__ import annotations

from typing import Any

from broker_sched.scheduler.decision import ActionState


def state(action: str = "guest/a", **overrides: Any) -> ActionState:
    fields: dict[str, Any] = {
        "pending": 0,
        "in_flight": 0,
        "arrival_rate_per_s": 0.0,
        "running": 0,
        "creating": 0,
        "mean_run_s": 0.02,
        "concurrency": 1,
        "cold_start_s": 0.7,
        "limit": 50,
        "partitions": None,
        "throttled": False,
    }
    fields.update(overrides)
    return ActionState(action=action, **fields)
