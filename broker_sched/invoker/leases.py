"""Leases: the deliveries an invoker is working on stay its own while it lives.

A broker gives an unacked delivery to another member once its redelivery window passes
(Redis's claim idle time, NATS's ack wait, the memory transport's ack wait, a share
group's acquisition lock). That window is what detects a dead invoker, so it should be
short, and what protects a long run from a second execution, so it should be long. The
invoker resolves the two by renewing (:meth:`Delivery.in_progress`) every delivery it
holds on the beat of its heartbeat: a living invoker keeps its runs however long they
take, and a dead one stops renewing when it stops beating, so its work returns to the
queue one window after its last heartbeat. The windows' defaults are a few heartbeats
long for that reason.

One loop per invoker renews all its deliveries together, and only those held for at
least half a beat: a handler that answers in milliseconds costs a dictionary insert and
delete, never a broker call.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

import anyio

from broker_sched.errors import TransportError
from transports.base import Delivery

log = logging.getLogger(__name__)

MAX_CONCURRENT_RENEWALS = 64
"""Renewals in flight at once, so a thousand long runs do not open a thousand requests."""


def renew_interval_s(heartbeat_interval_s: float, redelivery_window_s: float | None) -> float:
    """How often to renew: every heartbeat, or more often when the transport's window is
    shorter than three beats (so two late renewals in a row still lose nothing)."""
    if redelivery_window_s is None:
        return heartbeat_interval_s
    return min(heartbeat_interval_s, redelivery_window_s / 3)


class Leases:
    """The deliveries in hand, renewed together by :meth:`run`."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._held: dict[Delivery, float] = {}
        self.renewed = 0
        """Renewals sent so far (tests and benchmarks read it)."""

    def __len__(self) -> int:
        return len(self._held)

    @contextlib.contextmanager
    def held(self, delivery: Delivery) -> Iterator[None]:
        """Keep ``delivery`` renewed until the block ends (it is acked or nacked in it)."""
        self._held[delivery] = time.monotonic()
        try:
            yield
        finally:
            self._held.pop(delivery, None)

    def due(self, now_s: float) -> list[Delivery]:
        """Deliveries held for at least half an interval: younger ones cannot have used a
        window that is three intervals long."""
        threshold_s = now_s - self.interval_s / 2
        return [delivery for delivery, since_s in self._held.items() if since_s <= threshold_s]

    async def renew(self) -> None:
        """Renew every due delivery, a few at a time; a failed renewal is logged (the
        broker may then redeliver that one, which at-least-once allows)."""
        due = self.due(time.monotonic())
        if not due:
            return
        limiter = anyio.Semaphore(MAX_CONCURRENT_RENEWALS)

        async def one(delivery: Delivery) -> None:
            async with limiter:
                if delivery not in self._held:
                    return
                try:
                    await delivery.in_progress()
                except TransportError as exc:
                    log.warning("lease of %s not renewed: %s", delivery.id, exc)
                    return
                self.renewed += 1

        async with anyio.create_task_group() as renewing:
            for delivery in due:
                renewing.start_soon(one, delivery)

    async def run(self) -> None:
        """Renew on every interval until cancelled; a slow round delays the next one
        instead of overlapping it."""
        while True:
            started_s = time.monotonic()
            await self.renew()
            await anyio.sleep(max(0.0, self.interval_s - (time.monotonic() - started_s)))
