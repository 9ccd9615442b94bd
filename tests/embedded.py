"""Embedded stacks with test-friendly timings, for end-to-end tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from broker_sched.config import Settings, load_settings
from broker_sched.model import Action
from broker_sched.stack import Stack


def embedded_settings(**overrides: Any) -> Settings:
    invoker = {"keep_alive_s": 1.5, "pause_grace_s": 0.3, "heartbeat_interval_s": 0.2}
    invoker.update(overrides.pop("invoker", {}))
    return load_settings(transport="memory", invoker=invoker, **overrides)


def stack_with(actions: list[Action], **kwargs: Any) -> Stack:
    settings = kwargs.pop("settings", None) or embedded_settings()
    return Stack(settings, actions={a.fqn: a for a in actions}, **kwargs)


async def eventually(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Wait for a condition that has no event of its own (container removal by keep-alive)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
