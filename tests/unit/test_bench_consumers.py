"""Transport-level consumers: membership changes, and rebalances seen as one episode."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broker_sched.bench.consumers import ConsumerPool
from transports.base import Delivery, Subscription
from transports.memory import MemoryTransport


@dataclass(frozen=True)
class Event:
    at_s: float
    kind: str
    partitions: tuple[int, ...]


@dataclass
class ObservableSubscription(Subscription):
    """A memory subscription that reports partition events the way Kafka's does."""

    inner: Subscription
    events: list[Event] = field(default_factory=list)
    on_rebalance: Callable[[Any], None] | None = None

    async def _fetch(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        return await self.inner.fetch(max_messages, timeout_s)

    async def close(self) -> None:
        await self.inner.close()

    def emit(self, event: Event) -> None:
        self.events.append(event)
        if self.on_rebalance is not None:
            self.on_rebalance(event)


class PartitionedMemory(MemoryTransport):
    def __init__(self) -> None:
        super().__init__()
        self.made: dict[str, ObservableSubscription] = {}

    async def subscribe(self, queue: str, group: str, member: str) -> Subscription:
        subscription = ObservableSubscription(await super().subscribe(queue, group, member))
        subscription.emit(Event(0.0, "assigned", (0, 1) if not self.made else ()))
        self.made[member] = subscription
        return subscription


async def test_members_consume_and_leave_cleanly() -> None:
    handled: list[bytes] = []
    all_handled = asyncio.Event()

    async def handle(body: bytes) -> None:
        handled.append(body)
        if len(handled) == 10:
            all_handled.set()

    async with MemoryTransport() as transport:
        pool = ConsumerPool(transport, "q", run_ms=0, handle=handle, sink=lambda *a, **k: None)
        await pool.add_many(2)
        assert await pool.settled(1.0)
        for index in range(10):
            await transport.publish("q", b"%d" % index)
        await asyncio.wait_for(all_handled.wait(), 5.0)
        assert sorted(handled) == sorted(b"%d" % i for i in range(10))
        assert await pool.restart("c0") == "c0"
        assert await pool.remove() == "c0"
        assert list(pool.members) == ["c1"]
        await pool.close()
        assert pool.members == {}
        assert (await transport.backlog("q", "q")).total == 0


async def test_a_rebalance_runs_from_the_first_revocation_until_every_partition_has_an_owner() -> (
    None
):
    sunk: list[tuple[str, dict[str, Any]]] = []

    def sink(kind: str, **detail: Any) -> None:
        sunk.append((kind, detail))

    async def handle(body: bytes) -> None:
        return None

    async with PartitionedMemory() as transport:
        pool = ConsumerPool(transport, "q", run_ms=0, handle=handle, sink=sink, partitions=2)
        await pool.add("c0")
        assert pool.assignment() == {"c0": [0, 1]}
        assert pool.covered()
        await pool.add("c1")
        c0, c1 = transport.made["c0"], transport.made["c1"]
        c0.emit(Event(1.0, "revoked", (0, 1)))
        assert not pool.covered()
        c0.emit(Event(1.5, "assigned", (0,)))
        assert not pool.covered()
        c1.emit(Event(2.0, "assigned", (1,)))
        assert pool.covered()
        assert await pool.settled(0.1)
        assert sunk == [
            ("rebalance_started", {"at_s": 1.0, "member": "c0"}),
            ("rebalance_finished", {"at_s": 2.0, "took_ms": 1000.0}),
        ]
        await pool.close()
