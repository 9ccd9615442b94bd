"""Pulling work through broker outages, and keeping hold of the tasks it starts.

Every consumer on the invoker side — container proxies, the control-queue reader, the
baseline push pool — has the same two needs: a fetch that rides out a broker outage
with bounded backoff instead of dying (the client reconnects; acked work is safe), and
a set of the tasks it spawned so they are neither garbage-collected mid-run nor left
behind at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from broker_sched.errors import BrokerUnavailable
from transports.base import Delivery, Subscription

log = logging.getLogger(__name__)

FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 2.0


class Puller:
    """``fetch`` that returns nothing, after a growing pause, while the broker is away."""

    def __init__(self, subscription: Subscription, who: str) -> None:
        self.subscription = subscription
        self.who = who
        self._backoff_s = 0.0

    async def fetch(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        try:
            deliveries = await self.subscription.fetch(max_messages, timeout_s)
        except BrokerUnavailable as exc:
            self._backoff_s = min(MAX_BACKOFF_S, max(FIRST_BACKOFF_S, self._backoff_s * 2))
            log.warning(
                "%s: broker unavailable (%s); retrying in %.1f s", self.who, exc, self._backoff_s
            )
            await asyncio.sleep(self._backoff_s)
            return []
        self._backoff_s = 0.0
        return deliveries


class TaskSet:
    """Tasks started on behalf of one component, held until they finish."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait_any(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

    async def wait_all(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def cancel_all(self) -> None:
        for task in self._tasks:
            task.cancel()
