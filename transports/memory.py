"""In-memory transport: the embedded default and the reference implementation.

It is real, not a mock: the same contract and conformance suite as the network brokers,
with redelivery after ``ack_wait_s`` (a member that stalls or vanishes), immediate
redelivery when a member nacks or closes, and exact backlog counts. All state lives on
a :class:`MemoryBroker`; components that share one broker object talk to each other,
the way processes sharing a network broker do.

Faults for tests, with no monkeypatching: set ``broker.down = True`` to make every call
raise :class:`BrokerUnavailable`, or give ``broker.on_publish`` a handler that inspects
``(queue, body)`` and raises to fail chosen publishes.

Settings: ``[memory] ack_wait_s`` (default 3: an invoker renews what it runs on every
heartbeat, see :mod:`broker_sched.invoker.leases`). Limits: one process only; nothing
survives the process; partitions are not modelled (``resize`` is a no-op).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self

from pydantic import Field

from broker_sched.errors import BrokerUnavailable
from transports.base import (
    BackendSettings,
    Backlog,
    Capabilities,
    Delivery,
    Listener,
    Record,
    Subscription,
    Transport,
)

if TYPE_CHECKING:
    from broker_sched.config import Settings


@dataclass(slots=True)
class _Entry:
    id: str
    body: bytes
    published_s: float
    attempt: int = 1


@dataclass(slots=True)
class _Group:
    ready: deque[_Entry] = field(default_factory=deque)
    delayed: int = 0
    in_flight: dict[str, tuple[_Entry, str, asyncio.TimerHandle]] = field(default_factory=dict)
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)

    def put(self, entry: _Entry, *, front: bool = False) -> None:
        if front:
            self.ready.appendleft(entry)
        else:
            self.ready.append(entry)
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break


@dataclass(slots=True)
class _Queue:
    orphans: deque[_Entry] = field(default_factory=deque)
    groups: dict[str, _Group] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=itertools.count)
    appended: int = 0

    def group(self, name: str) -> _Group:
        """The group, created on first use; the first group adopts earlier messages."""
        group = self.groups.get(name)
        if group is None:
            group = self.groups[name] = _Group(ready=self.orphans if not self.groups else deque())
            self.orphans = deque()
        return group


class MemoryBroker:
    """The shared state of one in-memory broker, plus its fault-injection switches."""

    def __init__(self) -> None:
        self.queues: dict[str, _Queue] = {}
        self.channels: dict[str, set[asyncio.Queue[bytes]]] = {}
        self.records: dict[str, dict[str, tuple[float, bytes]]] = {}
        """Scope -> key -> (expiry on the monotonic clock, body)."""
        self.leases: dict[str, tuple[str, int, float]] = {}
        """Lease name -> (holder, fencing token, expiry on the monotonic clock)."""
        self.lease_tokens: dict[str, int] = {}
        """Lease name -> the last token given, kept after the lease expires."""
        self.down = False
        self.on_publish: Callable[[str, bytes], None] | None = None

    def check(self) -> None:
        if self.down:
            raise BrokerUnavailable("memory broker is down (fault injected)")


class MemoryDelivery(Delivery):
    def __init__(self, subscription: MemorySubscription, entry: _Entry) -> None:
        self._subscription = subscription
        self._entry = entry
        self.body = entry.body
        self.id = entry.id
        self.attempt = entry.attempt

    async def ack(self) -> None:
        self._subscription.finish(self.id)

    async def nack(self, delay_s: float = 0.0) -> None:
        self._subscription.give_back(self.id, delay_s)

    async def in_progress(self) -> None:
        self._subscription.extend(self.id)


class MemorySubscription(Subscription):
    def __init__(self, transport: MemoryTransport, queue: str, group: str, member: str) -> None:
        self.queue, self.group, self.member = queue, group, member
        self._transport = transport
        self._group = transport.broker.queues.setdefault(queue, _Queue()).group(group)
        self._closed = False

    async def _fetch(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        self._transport.broker.check()
        if self._closed:
            raise RuntimeError("fetch on a closed subscription")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._group.ready:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            waiter: asyncio.Future[None] = loop.create_future()
            self._group.waiters.append(waiter)
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except TimeoutError:
                return []
            finally:
                if waiter in self._group.waiters:
                    self._group.waiters.remove(waiter)
        deliveries: list[Delivery] = []
        while self._group.ready and len(deliveries) < max_messages:
            entry = self._group.ready.popleft()
            self._track(entry)
            deliveries.append(MemoryDelivery(self, entry))
        return deliveries

    def _track(self, entry: _Entry) -> None:
        timer = asyncio.get_running_loop().call_later(
            self._transport.ack_wait_s, self.give_back, entry.id, 0.0
        )
        self._group.in_flight[entry.id] = (entry, self.member, timer)

    def finish(self, entry_id: str) -> _Entry | None:
        """Drop ``entry_id`` from flight; late acks of redelivered work are ignored."""
        held = self._group.in_flight.get(entry_id)
        if held is None or held[1] != self.member:
            return None
        del self._group.in_flight[entry_id]
        held[2].cancel()
        return held[0]

    def give_back(self, entry_id: str, delay_s: float) -> None:
        entry = self.finish(entry_id)
        if entry is None:
            return
        entry.attempt += 1
        if delay_s <= 0:
            self._group.put(entry, front=True)
            return
        self._group.delayed += 1

        def release() -> None:
            self._group.delayed -= 1
            self._group.put(entry, front=True)

        asyncio.get_running_loop().call_later(delay_s, release)

    def extend(self, entry_id: str) -> None:
        held = self._group.in_flight.get(entry_id)
        if held is not None and held[1] == self.member:
            held[2].cancel()
            self._track(held[0])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._transport.subscriptions.discard(self)
        in_flight = self._group.in_flight
        for entry_id in [eid for eid, held in in_flight.items() if held[1] == self.member]:
            self.give_back(entry_id, 0.0)


class MemoryListener(Listener):
    def __init__(self, broker: MemoryBroker, channel: str) -> None:
        self.channel = channel
        self._broker = broker
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        broker.channels.setdefault(channel, set()).add(self._inbox)

    async def _receive(self, timeout_s: float) -> bytes | None:
        self._broker.check()
        try:
            async with asyncio.timeout(timeout_s):
                return await self._inbox.get()
        except TimeoutError:
            return None

    async def close(self) -> None:
        listeners = self._broker.channels.get(self.channel)
        if listeners is not None:
            listeners.discard(self._inbox)


class MemorySettings(BackendSettings):
    ack_wait_s: float = Field(default=3.0, gt=0)
    max_records: int = Field(
        default=100_000,
        ge=1,
        description="activation records kept per namespace, oldest dropped first: the "
        "store is this process's memory, which an hour of records at full speed would fill",
    )


class MemoryTransport(Transport):
    name = "memory"
    settings_section = "memory"
    settings_model = MemorySettings
    capabilities = Capabilities(
        partitioned=False, rebalances=False, renews_deliveries=True, leases=True
    )

    def __init__(
        self,
        broker: MemoryBroker | None = None,
        *,
        ack_wait_s: float = 3.0,
        max_message_bytes: int = 1_048_576,
        max_records: int = 100_000,
    ) -> None:
        super().__init__(max_message_bytes=max_message_bytes)
        self.broker = broker if broker is not None else MemoryBroker()
        self.ack_wait_s = ack_wait_s
        self.redelivery_window_s = ack_wait_s
        self.max_records = max_records
        self.subscriptions: set[MemorySubscription] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        memory = settings.section(MemorySettings)
        return cls(
            ack_wait_s=memory.ack_wait_s,
            max_message_bytes=settings.max_payload_bytes,
            max_records=memory.max_records,
        )

    async def close(self) -> None:
        for subscription in list(self.subscriptions):
            await subscription.close()

    async def ping(self) -> str:
        self.broker.check()
        return f"memory broker ({len(self.broker.queues)} queues)"

    async def declare(self, queue: str, partitions: int = 1) -> None:
        self.broker.check()
        self.broker.queues.setdefault(queue, _Queue())

    async def _publish(self, queue: str, body: bytes, key: str | None) -> None:
        self.broker.check()
        if self.broker.on_publish is not None:
            self.broker.on_publish(queue, body)
        state = self.broker.queues.setdefault(queue, _Queue())
        entry = _Entry(id=f"{queue}:{next(state.ids)}", body=body, published_s=time.monotonic())
        state.appended += 1
        if not state.groups:
            state.orphans.append(entry)
        for group in state.groups.values():
            group.put(_Entry(entry.id, body, entry.published_s))

    async def subscribe(self, queue: str, group: str, member: str) -> Subscription:
        self.broker.check()
        subscription = MemorySubscription(self, queue, group, member)
        self.subscriptions.add(subscription)
        return subscription

    async def backlog(self, queue: str, group: str) -> Backlog:
        self.broker.check()
        state = self.broker.queues.get(queue)
        if state is None:
            return Backlog(pending=0, in_flight=0)
        known = state.groups.get(group)
        ready = known.ready if known is not None else state.orphans
        oldest = time.monotonic() - ready[0].published_s if ready else None
        if known is None:
            return Backlog(
                pending=len(ready), in_flight=0, oldest_age_s=oldest, appended=state.appended
            )
        return Backlog(
            pending=len(ready) + known.delayed,
            in_flight=len(known.in_flight),
            oldest_age_s=oldest,
            appended=state.appended,
        )

    async def backlogs(self, pairs: Sequence[tuple[str, str]]) -> list[Backlog]:
        """In turn: each read is a few dict lookups, cheaper than a task per pair."""
        return [await self.backlog(queue, group) for queue, group in pairs]

    async def delete(self, queue: str) -> None:
        self.broker.check()
        self.broker.queues.pop(queue, None)

    async def send(self, channel: str, body: bytes) -> None:
        self.broker.check()
        for inbox in self.broker.channels.get(channel, ()):
            inbox.put_nowait(body)

    async def listen(self, channel: str) -> Listener:
        self.broker.check()
        return MemoryListener(self.broker, channel)

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> int | None:
        self.broker.check()
        now_s = time.monotonic()
        current = self.broker.leases.get(name)
        if current is not None and current[2] > now_s:
            if current[0] != holder:
                return None
            token = current[1]
        else:
            token = self.broker.lease_tokens.get(name, 0) + 1
            self.broker.lease_tokens[name] = token
        self.broker.leases[name] = (holder, token, now_s + ttl_s)
        return token

    async def release_lease(self, name: str, holder: str) -> None:
        self.broker.check()
        current = self.broker.leases.get(name)
        if current is not None and current[0] == holder:
            del self.broker.leases[name]

    async def put_record(self, scope: str, key: str, body: bytes, ttl_s: float) -> None:
        self.broker.check()
        now_s = time.monotonic()
        records = self.broker.records.setdefault(scope, {})
        # Oldest first: with one ttl, insertion order is expiry order.
        while records and (oldest := next(iter(records))) and records[oldest][0] <= now_s:
            del records[oldest]
        records.pop(key, None)
        records[key] = (now_s + ttl_s, body)
        if len(records) > self.max_records:
            del records[next(iter(records))]

    async def record_reply_and_ack(
        self, delivery: Delivery, record: Record, channel: str = ""
    ) -> None:
        """In turn, with no task beside it: nothing here waits, so nothing overlaps."""
        await self.put_record(record.scope, record.key, record.body, record.ttl_s)
        if channel:
            await self.send(channel, record.body)
        await delivery.ack()

    async def get_record(self, scope: str, key: str) -> bytes | None:
        self.broker.check()
        expiry_s, body = self.broker.records.get(scope, {}).get(key, (0.0, b""))
        return body if expiry_s > time.monotonic() else None

    async def recent_records(self, scope: str, limit: int) -> list[bytes]:
        self.broker.check()
        now_s = time.monotonic()
        records = self.broker.records.get(scope, {})
        live = sorted((k for k, (expiry_s, _) in records.items() if expiry_s > now_s), reverse=True)
        return [records[k][1] for k in live[:limit]]
