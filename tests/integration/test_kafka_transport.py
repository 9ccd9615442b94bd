"""The Kafka transport against a real broker: what the shared contract suite cannot see.

Offsets and commits, partitions and rebalances, the ``attempt`` header, channel topics and
fast failure. The broker comes from ``BROKER_SCHED_TEST_KAFKA``, else 127.0.0.1:9092 when
something listens there, else the shared ``kafka_bootstrap`` fixture (a container, or skip).
Every test uses fresh topic names and deletes them.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AsyncExitStack
from typing import Any

import pytest
from brokers import BROKERS, reachable, settings_for

from broker_sched.errors import BrokerUnavailable, PayloadTooLarge
from transports.base import Delivery
from transports.kafka import (
    CHANNEL_PREFIX,
    KafkaSubscription,
    KafkaTransport,
    RebalanceEvent,
    channel_topic,
)

pytestmark = pytest.mark.broker

NATIVE_BOOTSTRAP = "127.0.0.1:9092"
GROUP = "workers"
STABLE_TIMEOUT_S = 20.0
COLLECT_TIMEOUT_S = 15.0
POLL_S = 0.5


@pytest.fixture
def bootstrap(request: pytest.FixtureRequest) -> str:
    if not os.environ.get(BROKERS["kafka"].address_env) and reachable(NATIVE_BOOTSTRAP):
        return NATIVE_BOOTSTRAP
    return str(request.getfixturevalue("kafka_bootstrap"))


@pytest.fixture
async def make_transport(bootstrap: str) -> AsyncIterator[Callable[..., Any]]:
    """``await make_transport(**overrides)``: another connected client, like another process."""
    async with AsyncExitStack() as stack:

        async def make(**overrides: Any) -> KafkaTransport:
            transport = KafkaTransport.from_settings(settings_for("kafka", bootstrap, **overrides))
            return await stack.enter_async_context(transport)

        yield make


@pytest.fixture
async def transport(make_transport: Callable[..., Any]) -> KafkaTransport:
    made: KafkaTransport = await make_transport()
    return made


@pytest.fixture
async def topic(transport: KafkaTransport) -> AsyncIterator[str]:
    name = f"kt-{uuid.uuid4().hex[:12]}"
    yield name
    await transport.delete(name)


async def fetch_n(
    member: KafkaSubscription, count: int, timeout_s: float = COLLECT_TIMEOUT_S
) -> list[Delivery]:
    """Up to ``count`` deliveries, stopping as soon as they are there."""
    deadline = time.monotonic() + timeout_s
    got: list[Delivery] = []
    while len(got) < count and time.monotonic() < deadline:
        got.extend(await member.fetch(count - len(got), POLL_S))
    return got


async def stable(members: Sequence[KafkaSubscription], partitions: int) -> None:
    """Wait until every member finished its last rebalance and they hold all partitions.

    Rebalance events are the signal, so this returns the moment the group has settled.
    """
    changed = asyncio.Event()

    def note(_: RebalanceEvent) -> None:
        changed.set()

    for member in members:
        member.on_rebalance = note

    def settled() -> bool:
        held: list[int] = []
        for member in members:
            if not member.events or member.events[-1].kind != "assigned":
                return False
            held.extend(member.events[-1].partitions)
        return sorted(held) == list(range(partitions))

    async with asyncio.timeout(STABLE_TIMEOUT_S):
        while not settled():
            changed.clear()
            await changed.wait()


async def consume_all(
    members: Sequence[KafkaSubscription], expected: Iterable[bytes]
) -> list[list[Delivery]]:
    """Members fetch and ack concurrently until every expected body was acked once."""
    wanted = set(expected)
    received: list[list[Delivery]] = [[] for _ in members]
    done = asyncio.Event()

    async def consume(index: int, member: KafkaSubscription) -> None:
        while not done.is_set():
            for delivery in await member.fetch(10, POLL_S):
                await delivery.ack()
                received[index].append(delivery)
            if wanted <= {d.body for ds in received for d in ds}:
                done.set()

    async with asyncio.timeout(COLLECT_TIMEOUT_S):
        await asyncio.gather(*(consume(i, m) for i, m in enumerate(members)))
    return received


async def test_declare_is_idempotent_and_never_shrinks(
    transport: KafkaTransport, topic: str
) -> None:
    await transport.declare(topic, partitions=3)
    await transport.publish(topic, b"kept")
    await transport.declare(topic, partitions=1)

    assert await transport.max_consumers(topic) == 3
    assert (await transport.backlog(topic, GROUP)).total == 1


async def test_delivery_id_names_topic_partition_offset_and_ack_is_committed(
    make_transport: Callable[..., Any], transport: KafkaTransport, topic: str
) -> None:
    await transport.declare(topic)
    await transport.publish(topic, b"one", key="k")

    async with await transport.subscribe(topic, GROUP, "m1") as member:
        [delivery] = await fetch_n(member, 1)
        assert (delivery.id, delivery.body, delivery.attempt) == (f"{topic}:0:0", b"one", 1)
        await delivery.ack()

    other: KafkaTransport = await make_transport()
    after = await other.backlog(topic, GROUP)
    assert (after.pending, after.in_flight, after.partitions) == (0, 0, 1)


async def test_members_share_partitions_without_duplicates(
    transport: KafkaTransport, topic: str
) -> None:
    await transport.declare(topic, partitions=2)
    async with (
        await transport.subscribe(topic, GROUP, "m1") as first,
        await transport.subscribe(topic, GROUP, "m2") as second,
    ):
        await stable([first, second], partitions=2)
        bodies = [f"m{i}".encode() for i in range(20)]
        for i, body in enumerate(bodies):
            await transport.publish(topic, body, key=str(i))

        received = await consume_all([first, second], bodies)

    got = [d.body for ds in received for d in ds]
    assert sorted(got) == sorted(bodies)
    assert all(received), "both members should own a partition and work"


async def test_nack_republishes_a_copy_with_the_next_attempt(
    transport: KafkaTransport, topic: str
) -> None:
    await transport.declare(topic)
    await transport.publish(topic, b"retry me", key="k")

    async with await transport.subscribe(topic, GROUP, "m1") as member:
        [first] = await fetch_n(member, 1)
        await first.nack()
        [second] = await fetch_n(member, 1)
        assert (second.body, second.attempt) == (b"retry me", 2)
        assert second.id == f"{topic}:0:1"
        await second.nack()
        [third] = await fetch_n(member, 1)
        assert third.attempt == 3
        await third.ack()
        assert (await transport.backlog(topic, GROUP)).total == 0


async def test_close_publishes_delayed_nacks_at_once(transport: KafkaTransport, topic: str) -> None:
    await transport.declare(topic)
    await transport.publish(topic, b"later")

    async with await transport.subscribe(topic, GROUP, "m1") as member:
        [delivery] = await fetch_n(member, 1)
        await delivery.nack(delay_s=300)
        assert await member.fetch(1, 0.5) == []
        assert (await transport.backlog(topic, GROUP)).in_flight == 1

    async with await transport.subscribe(topic, GROUP, "m2") as successor:
        [copy] = await fetch_n(successor, 1)
        assert (copy.body, copy.attempt) == (b"later", 2)
        assert await successor.fetch(1, 0.5) == [], "the original must have been committed"


async def test_closing_the_transport_settles_its_members_first(
    make_transport: Callable[..., Any], transport: KafkaTransport, topic: str
) -> None:
    await transport.declare(topic)
    await transport.publish(topic, b"nacked")
    await transport.publish(topic, b"acked")
    owner: KafkaTransport = await make_transport()
    member = await owner.subscribe(topic, GROUP, "m1")
    nacked, acked = await fetch_n(member, 2)
    await nacked.nack(delay_s=300)
    await acked.ack()

    await owner.close()

    async with await transport.subscribe(topic, GROUP, "m2") as successor:
        [copy] = await fetch_n(successor, 1)
        assert (copy.body, copy.attempt) == (b"nacked", 2)
        assert await successor.fetch(1, 0.5) == []


async def test_out_of_order_acks_commit_only_the_contiguous_prefix(
    transport: KafkaTransport, topic: str
) -> None:
    await transport.declare(topic)
    for i in range(4):
        await transport.publish(topic, f"m{i}".encode())

    async with await transport.subscribe(topic, GROUP, "m1") as member:
        taken = await fetch_n(member, 4)
        assert [d.body for d in taken] == [b"m0", b"m1", b"m2", b"m3"]
        await taken[0].ack()
        await taken[2].ack()
        await taken[3].ack()  # m1 is still in flight: nothing past it may be committed

    async with await transport.subscribe(topic, GROUP, "m2") as successor:
        redelivered = await fetch_n(successor, 3, timeout_s=3.0)
        assert [d.body for d in redelivered] == [b"m1", b"m2", b"m3"]
        assert [d.attempt for d in redelivered] == [1, 1, 1]


async def test_work_of_a_member_closed_without_acking_goes_to_another(
    transport: KafkaTransport, topic: str
) -> None:
    await transport.declare(topic, partitions=1)
    for i in range(3):
        await transport.publish(topic, f"m{i}".encode())

    async with (
        await transport.subscribe(topic, GROUP, "m1") as first,
        await transport.subscribe(topic, GROUP, "m2") as second,
    ):
        await stable([first, second], partitions=1)
        owner, idle = (first, second) if first.events[-1].partitions else (second, first)
        taken = await fetch_n(owner, 3)
        assert len(taken) == 3
        await taken[0].ack()
        await owner.close()

        redelivered = await fetch_n(idle, 2)

    assert [d.body for d in redelivered] == [b"m1", b"m2"]


async def test_ack_after_the_partition_moved_is_dropped_and_work_redelivered(
    transport: KafkaTransport, topic: str
) -> None:
    await transport.declare(topic, partitions=1)
    await transport.publish(topic, b"moved")

    async with await transport.subscribe(topic, GROUP, "m1") as first:
        [held] = await fetch_n(first, 1)
        async with await transport.subscribe(topic, GROUP, "m2") as second:
            await stable([first, second], partitions=1)
            revokes = [e for e in first.events if e.kind == "revoked" and e.partitions]
            assert revokes, "the join of m2 must revoke m1's partition (eager rebalancing)"
            await held.ack()  # too late: the rebalance already gave the message back

            received = await consume_all([first, second], [b"moved"])

    assert [d.body for ds in received for d in ds] == [b"moved"]


async def test_acked_work_is_not_redelivered_after_a_rebalance(
    transport: KafkaTransport, topic: str
) -> None:
    await transport.declare(topic, partitions=2)
    bodies = [f"m{i}".encode() for i in range(6)]
    for i, body in enumerate(bodies):
        await transport.publish(topic, body, key=str(i))

    async with await transport.subscribe(topic, GROUP, "m1") as first:
        taken = await fetch_n(first, 3)
        for delivery in taken:
            await delivery.ack()
        async with await transport.subscribe(topic, GROUP, "m2") as second:
            await stable([first, second], partitions=2)
            rest = [body for body in bodies if body not in {d.body for d in taken}]
            received = await consume_all([first, second], rest)

    again = [d.body for ds in received for d in ds]
    assert sorted(again) == sorted(rest), "acked messages must have been committed"


async def test_backlog_is_exact_in_process_and_counts_foreign_in_flight_as_pending(
    make_transport: Callable[..., Any], transport: KafkaTransport, topic: str
) -> None:
    await transport.declare(topic, partitions=2)
    for i in range(10):
        await transport.publish(topic, f"m{i}".encode(), key=str(i))
    assert (await transport.backlog(topic, GROUP)).pending == 10

    async with await transport.subscribe(topic, GROUP, "m1") as member:
        taken = await fetch_n(member, 6)
        assert len(taken) == 6
        for delivery in taken[:2]:
            await delivery.ack()

        mine = await transport.backlog(topic, GROUP)
        assert (mine.pending, mine.in_flight, mine.partitions) == (4, 4, 2)

        elsewhere: KafkaTransport = await make_transport()
        foreign = await elsewhere.backlog(topic, GROUP)
        assert foreign.in_flight == 0
        assert foreign.pending >= 8, "another process cannot see this one's in-flight work"


async def test_backlogs_batch_many_topics_and_groups(transport: KafkaTransport, topic: str) -> None:
    topics = [f"{topic}-{i}" for i in range(5)]
    try:
        for i, name in enumerate(topics):
            await transport.declare(name, partitions=1 + i % 2)
            for _ in range(i):
                await transport.publish(name, b"x")
        pairs = [(name, f"g-{name}") for name in topics] + [(f"{topic}-missing", "g")]

        batched = await transport.backlogs(pairs)
        single = [await transport.backlog(q, g) for q, g in pairs]

        assert batched == single
        assert [b.pending for b in batched] == [0, 1, 2, 3, 4, 0]
        assert [b.partitions for b in batched[:5]] == [1, 2, 1, 2, 1]
    finally:
        for name in topics:
            await transport.delete(name)


async def test_resize_grows_partitions_and_a_new_member_consumes_them(
    transport: KafkaTransport, topic: str
) -> None:
    await transport.declare(topic, partitions=1)
    assert await transport.resize(topic, 3) == 3
    assert await transport.resize(topic, 2) == 3, "resize never shrinks"
    assert await transport.max_consumers(topic) == 3

    async with (
        await transport.subscribe(topic, GROUP, "m1") as first,
        await transport.subscribe(topic, GROUP, "m2") as second,
        await transport.subscribe(topic, GROUP, "m3") as third,
    ):
        members = [first, second, third]
        await stable(members, partitions=3)
        bodies = [f"m{i}".encode() for i in range(30)]
        for i, body in enumerate(bodies):
            await transport.publish(topic, body, key=str(i))

        received = await consume_all(members, bodies)

    assert sorted(d.body for ds in received for d in ds) == sorted(bodies)
    partitions_seen = {int(d.id.rsplit(":", 2)[1]) for ds in received for d in ds}
    assert partitions_seen == {0, 1, 2}
    assert all(received)


async def test_resize_while_consuming_reaches_the_running_group(
    transport: KafkaTransport, topic: str
) -> None:
    await transport.declare(topic, partitions=1)
    async with (
        await transport.subscribe(topic, GROUP, "m1") as first,
        await transport.subscribe(topic, GROUP, "m2") as second,
    ):
        await stable([first, second], partitions=1)
        assert await transport.resize(topic, 2) == 2
        await stable([first, second], partitions=2)
        bodies = [f"m{i}".encode() for i in range(10)]
        for i, body in enumerate(bodies):
            await transport.publish(topic, body, key=str(i))

        received = await consume_all([first, second], bodies)

    assert all(received), "after the resize both members own a partition"


async def test_channel_round_trip_receives_only_what_is_sent_after_listen(
    transport: KafkaTransport,
) -> None:
    channel = f"replies/{uuid.uuid4().hex[:8]}"
    assert channel_topic(channel).startswith(CHANNEL_PREFIX)
    assert "/" not in channel_topic(channel)
    try:
        await transport.send(channel, b"too early")
        async with await transport.listen(channel) as listener:
            await transport.send(channel, b"first")
            await transport.send(channel, b"second")
            assert await listener.receive(5.0) == b"first"
            assert await listener.receive(5.0) == b"second"
            assert await listener.receive(0.3) is None
    finally:
        await transport.delete(channel_topic(channel))


async def test_oversize_payload_is_refused_before_the_broker(
    make_transport: Callable[..., Any], topic: str
) -> None:
    small: KafkaTransport = await make_transport(max_payload_bytes=1_000)
    await small.declare(topic)
    await small.publish(topic, b"x" * 1_000)
    with pytest.raises(PayloadTooLarge):
        await small.publish(topic, b"x" * 1_001)
    assert (await small.backlog(topic, GROUP)).pending == 1


async def test_large_payload_within_the_limit_fits_the_topic(
    make_transport: Callable[..., Any], topic: str
) -> None:
    big: KafkaTransport = await make_transport(max_payload_bytes=2_000_000)
    await big.declare(topic)
    body = os.urandom(2_000_000)
    await big.publish(topic, body)
    async with await big.subscribe(topic, GROUP, "m1") as member:
        [delivery] = await fetch_n(member, 1)
        assert delivery.body == body
        await delivery.ack()


async def test_unreachable_broker_fails_fast() -> None:
    transport = KafkaTransport.from_settings(settings_for("kafka", "127.0.0.1:1"))
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await transport.connect()
    with pytest.raises(BrokerUnavailable):
        await transport.publish("nowhere", b"x")
    with pytest.raises(BrokerUnavailable):
        await transport.ping()
    await transport.close()
    assert time.monotonic() - started < 5.0


async def test_static_membership_joins_with_the_member_id(
    make_transport: Callable[..., Any], topic: str
) -> None:
    static: KafkaTransport = await make_transport(kafka={"group_instance_id": "inst-{member}"})
    await static.declare(topic)
    await static.publish(topic, b"hello")
    async with await static.subscribe(topic, GROUP, "m1") as member:
        [delivery] = await fetch_n(member, 1)
        await delivery.ack()
        assert [e.kind for e in member.events][-1] == "assigned"
