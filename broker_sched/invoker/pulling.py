"""Pulling work through broker outages.

Every consumer on the invoker side — container proxies, the control-queue reader, the
baseline push pool — needs a fetch that rides out a broker outage with bounded backoff
instead of dying (the client reconnects; acked work is safe).
"""

from __future__ import annotations

import logging

import anyio

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
            await anyio.sleep(self._backoff_s)
            return []
        self._backoff_s = 0.0
        return deliveries
