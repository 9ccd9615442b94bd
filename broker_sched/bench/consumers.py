"""Consumers driven directly at the transport level: members of one group.

The rebalance, partition-limit and raw scenarios need to add, remove and restart
consumers at chosen moments, which is simpler and more repeatable with bare
subscriptions than through the scheduler. Each member is a loop: fetch one message,
"run" it (sleep ``run_ms``), hand it to ``handle``, ack.

Rebalances are observed through a backend's ``on_rebalance`` hook where it has one
(Kafka: ``revoked`` starts a rebalance for a member, ``assigned`` ends it). The pool
reports a group-wide ``rebalance_started`` when the first member gives up partitions
(a member that joins revokes nothing: its start is not one) and ``rebalance_finished``
once every partition has an owner again; backends without rebalances report neither,
which is the point of the comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from broker_sched.bench.cell import delete_queues
from broker_sched.bench.load import stop_tasks
from broker_sched.bench.recorder import Recorder
from broker_sched.errors import BrokerUnavailable
from broker_sched.topology import consumer_group
from transports.base import Subscription, Transport

log = logging.getLogger(__name__)

SETTLE_TIMEOUT_S = 60.0
"""How long a group may take until every partition has an owner (a Kafka join)."""

FETCH_TIMEOUT_S = 0.2
WARMUP = b"bench-warmup"
"""Body prefix of the messages that check every member of a new pool takes work."""
STOP_GRACE_S = 2.0
OUTAGE_BACKOFF_S = 0.5

EventSink = Callable[..., None]
"""``sink(kind, at_s=monotonic_s, **detail)``, e.g. :meth:`Recorder.event`."""


class RebalanceEventLike(Protocol):
    at_s: float
    kind: str
    partitions: tuple[int, ...]


@runtime_checkable
class ObservableRebalances(Protocol):
    """A subscription that reports its partition revocations and assignments (Kafka).

    ``events`` holds what happened before anyone listened (a member is assigned its
    first partitions while it subscribes), ``on_rebalance`` is called for the rest.
    """

    events: Iterable[Any]
    on_rebalance: Callable[[Any], None] | None


@dataclass(eq=False)
class Member:
    name: str
    subscription: Subscription
    task: asyncio.Task[None] | None = None
    stopping: bool = False
    assigned: set[int] = field(default_factory=set)
    completed: int = 0


class ConsumerPool:
    def __init__(
        self,
        transport: Transport,
        queue: str,
        *,
        run_ms: float,
        handle: Callable[[bytes], Awaitable[None]],
        sink: EventSink,
        partitions: int | None = None,
    ) -> None:
        """``partitions``: the queue's partition count on a partitioned transport, else None."""
        self.transport = transport
        self.queue = queue
        self.group = consumer_group(queue)
        self.run_ms = run_ms
        self.handle = handle
        self.sink = sink
        self.partitions = partitions
        self.members: dict[str, Member] = {}
        self.observable = False
        self._serial = 0
        self._rebalancing_since_s: float | None = None
        self._changed = asyncio.Event()

    async def add(self, name: str | None = None) -> Member:
        if name is None:
            name = f"c{self._serial}"
            self._serial += 1
        subscription = await self.transport.subscribe(self.queue, self.group, name)
        member = self.members[name] = Member(name, subscription)
        if isinstance(subscription, ObservableRebalances):
            self.observable = True
            for event in list(subscription.events):
                self._on_rebalance(member, event)
            subscription.on_rebalance = lambda event: self._on_rebalance(member, event)
        member.task = asyncio.create_task(self._consume(member), name=f"bench-consumer-{name}")
        return member

    async def add_many(self, count: int) -> None:
        """Subscribe ``count`` members at once: on a rebalancing broker they join in one
        round instead of one rebalance each."""
        names = [f"c{self._serial + index}" for index in range(count)]
        self._serial += count
        await asyncio.gather(*(self.add(name) for name in names))

    async def remove(self, name: str | None = None) -> str:
        """Close a member (the newest by default): it leaves the group as a shut-down would."""
        name = name or next(reversed(self.members))
        member = self.members.pop(name)
        await self._stop(member)
        self._changed.set()
        return name

    async def restart(self, name: str | None = None) -> str:
        """Close a member and subscribe again under the same name, as a process restart."""
        name = await self.remove(name or next(iter(self.members)))
        await self.add(name)
        return name

    async def close(self) -> None:
        for name in list(self.members):
            await self._stop(self.members.pop(name))

    def covered(self) -> bool:
        """Every partition has exactly one owner (always true without partition events)."""
        if not self.observable or self.partitions is None:
            return True
        owned = [p for member in self.members.values() for p in member.assigned]
        return len(owned) == len(set(owned)) and set(owned) == set(range(self.partitions))

    def stable(self) -> bool:
        """Every partition has an owner, every member has one where there are enough to go
        round, and no rebalance is under way.

        The middle condition matters on KIP-848: the first member to join is given every
        partition, and the others' shares move to them only at later heartbeats.
        """
        return self.covered() and self.balanced() and self._rebalancing_since_s is None

    def balanced(self) -> bool:
        if not self.observable or self.partitions is None:
            return True
        if len(self.members) > self.partitions:
            return True
        return all(member.assigned for member in self.members.values())

    async def settled(self, timeout_s: float) -> bool:
        """Wait until the group is :meth:`stable`; False when ``timeout_s`` passed first."""
        deadline_s = time.monotonic() + timeout_s
        while not self.stable():
            self._changed.clear()
            remaining_s = deadline_s - time.monotonic()
            if remaining_s <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining_s)
        return True

    async def warmed_up(self, timeout_s: float) -> bool:
        """Feed warm-up messages until every member has completed one; False on timeout.

        Without partitions any member can take any message, so this ends; it matters
        where a member gets work only some time after subscribing (a share-group member
        waits for the group's next heartbeat), which would otherwise count as a pause.
        """
        deadline_s = time.monotonic() + timeout_s
        while any(member.completed == 0 for member in self.members.values()):
            remaining_s = deadline_s - time.monotonic()
            if remaining_s <= 0:
                return False
            for _ in self.members:
                await self.transport.publish(self.queue, WARMUP)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining_s, 1.0))
        return True

    async def all_working(self, timeout_s: float) -> bool:
        """Under load: wait until every member has completed a message; False on timeout."""
        deadline_s = time.monotonic() + timeout_s
        while any(member.completed == 0 for member in self.members.values()):
            if time.monotonic() >= deadline_s:
                return False
            await asyncio.sleep(FETCH_TIMEOUT_S)
        return True

    def assignment(self) -> dict[str, list[int]]:
        return {name: sorted(member.assigned) for name, member in self.members.items()}

    async def _stop(self, member: Member) -> None:
        """Let the member's loop finish its message and leave; cancel only if it hangs."""
        member.stopping = True
        if member.task is not None:
            await stop_tasks([member.task], grace_s=FETCH_TIMEOUT_S + STOP_GRACE_S)
        await member.subscription.close()

    async def _consume(self, member: Member) -> None:
        subscription = member.subscription
        while not member.stopping:
            try:
                deliveries = await subscription.fetch(1, FETCH_TIMEOUT_S)
            except BrokerUnavailable as exc:
                log.warning("bench consumer %s: broker unavailable: %s", member.name, exc)
                await asyncio.sleep(OUTAGE_BACKOFF_S)
                continue
            for delivery in deliveries:
                if delivery.body.startswith(WARMUP):
                    await delivery.ack()
                    member.completed += 1
                    self._changed.set()
                    continue
                if self.run_ms > 0:
                    await asyncio.sleep(self.run_ms / 1000)
                await self.handle(delivery.body)
                await delivery.ack()
                member.completed += 1

    def _on_rebalance(self, member: Member, event: RebalanceEventLike) -> None:
        if event.kind == "revoked":
            member.assigned -= set(event.partitions)
            if self._rebalancing_since_s is None and event.partitions:
                self._rebalancing_since_s = event.at_s
                self.sink("rebalance_started", at_s=event.at_s, member=member.name)
        else:
            member.assigned = set(event.partitions)
            if self._rebalancing_since_s is not None and self.covered():
                took_ms = (event.at_s - self._rebalancing_since_s) * 1000
                self._rebalancing_since_s = None
                self.sink("rebalance_finished", at_s=event.at_s, took_ms=round(took_ms, 1))
        self._changed.set()


@contextlib.asynccontextmanager
async def settled_pool(
    transport: Transport,
    queue: str,
    *,
    partitions: int,
    consumers: int,
    run_ms: float,
    handle: Callable[[bytes], Awaitable[None]],
    recorder: Recorder,
) -> AsyncIterator[ConsumerPool]:
    """``consumers`` members on a new ``queue`` of ``partitions``, with ``recorder``'s
    clock started once every partition has an owner (a Kafka group has joined); at the
    end the members leave and the queue is deleted."""
    await transport.declare(queue, partitions=partitions)
    pool = ConsumerPool(
        transport,
        queue,
        run_ms=run_ms,
        handle=handle,
        sink=recorder.event,
        partitions=await transport.max_consumers(queue),
    )
    try:
        await pool.add_many(consumers)
        await pool.settled(SETTLE_TIMEOUT_S)
        if pool.partitions is None:
            await pool.warmed_up(SETTLE_TIMEOUT_S)
        recorder.t0_s = time.monotonic()
        yield pool
    finally:
        await pool.close()
        await delete_queues(transport, [queue])
