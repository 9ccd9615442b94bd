"""``migrate move``: copy the activations an old group has not finished to the new transport.

The old queue is read as its own consumer group (the one the container proxies use), so
"not finished" means exactly what the proxies would still run: past the committed offsets
on Kafka, undelivered or unacked entries on Redis, unacked messages on NATS. Each
activation is copied to the target first and acked on the source only once the target
has confirmed it; an ack on Kafka becomes a commit of the offsets below it.

Interrupting a move at any point (Ctrl-C, a crash, the target failing) is safe: what was
not acked stays on the source and a re-run reads it again. The copy itself is idempotent
per activation id (see :mod:`broker_sched.migration.targets`), so an activation copied
just before the interruption is not copied twice: the re-run counts it as *skipped*.

Counts per queue: *moved* (copied now), *skipped* (the target already had it), *failed*
(not moved by this run: unreadable or too large for the target — parked on the source's
dead-letter queue — or not confirmed by the target before it failed, in which case it is
still on the source) and *left* (still unfinished on the source when the run stopped).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from broker_sched.errors import BrokerSchedError, MalformedMessage, PayloadTooLarge
from broker_sched.migration import QueuePair
from broker_sched.model import Activation, decode, new_id
from transports.base import Delivery, Subscription, Transport

log = logging.getLogger(__name__)

FETCH_TIMEOUT_S = 1.0
PARALLEL_QUEUES = 4
"""Queues moved at once; each holds one member of its group on the source."""


class MoveTarget(Protocol):
    """Where moved activations go: a transport that can publish once per id."""

    @property
    def name(self) -> str: ...

    async def publish_once(self, queue: str, body: bytes, message_id: str) -> bool:
        """Append ``body`` to ``queue`` unless ``message_id`` was appended before.

        True when appended now, False when it was already there. Raises
        :class:`PayloadTooLarge`, or a :class:`TransportError` when the target failed
        (then it may or may not have the copy; a later call settles it).
        """
        ...


class Outcome(Enum):
    MOVED = "moved"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(slots=True)
class MoveCount:
    moved: int = 0
    skipped: int = 0
    failed: int = 0
    left: int = 0

    def add(self, outcome: Outcome) -> None:
        if outcome is Outcome.MOVED:
            self.moved += 1
        elif outcome is Outcome.SKIPPED:
            self.skipped += 1
        else:
            self.failed += 1

    def __iadd__(self, other: MoveCount) -> MoveCount:
        self.moved += other.moved
        self.skipped += other.skipped
        self.failed += other.failed
        self.left += other.left
        return self


@dataclass(slots=True)
class QueueMove:
    pair: QueuePair
    count: MoveCount = field(default_factory=MoveCount)
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and self.count.failed == 0 and self.count.left == 0


class Mover:
    def __init__(
        self,
        source: Transport,
        target: MoveTarget,
        *,
        batch: int,
        idle_timeout_s: float,
        member: str | None = None,
    ) -> None:
        """``source`` is connected by the caller. ``idle_timeout_s``: how long a queue
        whose remaining work is held by other consumers is waited for."""
        self.source = source
        self.target = target
        self.batch = batch
        self.idle_timeout_s = idle_timeout_s
        self.member = member or f"migrate-{new_id()[-8:]}"

    async def plan(self, pairs: Sequence[QueuePair]) -> list[int]:
        """How many activations each queue would move now (nothing is changed)."""
        backlogs = await self.source.backlogs([(pair.source, pair.group) for pair in pairs])
        return [backlog.total for backlog in backlogs]

    async def move_all(
        self,
        pairs: Sequence[QueuePair],
        on_done: Callable[[QueueMove], None] | None = None,
    ) -> list[QueueMove]:
        """Move every queue, a few at a time; ``on_done`` hears of each as it finishes."""
        limit = asyncio.Semaphore(PARALLEL_QUEUES)

        async def one(pair: QueuePair) -> QueueMove:
            async with limit:
                done = await self.move(pair)
            if on_done is not None:
                on_done(done)
            return done

        return list(await asyncio.gather(*(one(pair) for pair in pairs)))

    async def move(self, pair: QueuePair) -> QueueMove:
        """Move one queue until its group has nothing left; errors end up in the result."""
        done = QueueMove(pair)
        try:
            async with await self.source.subscribe(
                pair.source, pair.group, self.member
            ) as subscription:
                done.count.left = await self._copy_all(subscription, pair, done.count)
        except BrokerSchedError as exc:
            log.warning("move %s: %s", pair.source, exc)
            done.error = str(exc)
            return done
        if done.count.left:
            done.error = (
                f"{done.count.left} activations still held by other consumers of "
                f"group {pair.group!r} after {self.idle_timeout_s:.0f} s"
            )
        return done

    async def _copy_all(self, subscription: Subscription, pair: QueuePair, count: MoveCount) -> int:
        """Copy batches until the group's backlog is zero, or until only work held by
        others is left for ``idle_timeout_s``; returns what is left."""
        idle_since_s: float | None = None
        while True:
            deliveries = await subscription.fetch(self.batch, FETCH_TIMEOUT_S)
            await self._copy_batch(pair, deliveries, count)
            if len(deliveries) == self.batch:  # more is likely waiting
                idle_since_s = None
                continue
            left = (await self.source.backlog(pair.source, pair.group)).total
            if left == 0:
                return 0
            if deliveries:
                idle_since_s = None
                continue
            now_s = time.monotonic()
            idle_since_s = idle_since_s or now_s
            if now_s - idle_since_s >= self.idle_timeout_s:
                return left

    async def _copy_batch(
        self, pair: QueuePair, deliveries: list[Delivery], count: MoveCount
    ) -> None:
        """Copy a batch concurrently; a target failure stops the queue after the batch.

        Each activation is acked as soon as its own copy is confirmed, so one failure
        leaves only the unconfirmed ones on the source."""
        outcomes = await asyncio.gather(
            *(self._copy(pair, delivery) for delivery in deliveries), return_exceptions=True
        )
        failure: BaseException | None = None
        for outcome in outcomes:
            if isinstance(outcome, Outcome):
                count.add(outcome)
            else:
                count.failed += 1
                failure = failure or outcome
        if failure is not None:
            raise failure

    async def _copy(self, pair: QueuePair, delivery: Delivery) -> Outcome:
        """Put one activation on the target, then ack it on the source."""
        try:
            activation = decode(Activation, delivery.body)
        except MalformedMessage as exc:
            await self._park(pair, delivery, str(exc))
            return Outcome.FAILED
        try:
            copied = await self.target.publish_once(pair.target, delivery.body, activation.id)
        except PayloadTooLarge as exc:
            await self._park(pair, delivery, f"too large for {self.target.name}: {exc}")
            return Outcome.FAILED
        await delivery.ack()
        return Outcome.MOVED if copied else Outcome.SKIPPED

    async def _park(self, pair: QueuePair, delivery: Delivery, reason: str) -> None:
        """An activation that cannot be moved goes to the source's dead-letter queue, where
        it fits (it was accepted there), with the reason."""
        await self.source.dead_letter(pair.source, delivery.body, reason)
        await delivery.ack()
