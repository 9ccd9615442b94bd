"""The Redis Streams transport against a real Redis: what the shared contract suite cannot see.

Entry ids and delivery counts, the parking consumer behind nack and close, XAUTOCLAIM of
a vanished member, backlog counts when ``lag`` is NULL, and fast failure. Redis comes
from ``BROKER_SCHED_TEST_REDIS``, else 127.0.0.1:6379 when something listens there, else
the shared ``redis_url`` fixture (a container, or skip). Every test uses fresh stream
names and deletes them; a raw redis-py client inspects what the transport left behind.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
from brokers import BROKERS, reachable, settings_for
from redis.asyncio import Redis

from broker_sched.errors import BrokerUnavailable, PayloadTooLarge, TransportNotInstalled
from transports.base import Delivery, dead_letter_queue
from transports.redis_streams import (
    RETURNED,
    RedisStreamsTransport,
    RedisSubscription,
    channel_key,
    stream_key,
)

pytestmark = pytest.mark.broker

NATIVE_URL = "redis://127.0.0.1:6379/0"
GROUP = "workers"
SHORT_IDLE_MS = 200
COLLECT_TIMEOUT_S = 10.0
POLL_S = 0.5

MakeTransport = Callable[..., Any]


@pytest.fixture
def url(request: pytest.FixtureRequest) -> str:
    if not os.environ.get(BROKERS["redis"].address_env) and reachable(NATIVE_URL):
        return NATIVE_URL
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture
async def make_transport(url: str) -> AsyncIterator[MakeTransport]:
    """``await make_transport(**redis_overrides)``: another connected client, like another
    process; closed at teardown."""
    async with AsyncExitStack() as stack:

        async def make(**overrides: Any) -> RedisStreamsTransport:
            settings = settings_for("redis", url, redis=overrides)
            transport = RedisStreamsTransport.from_settings(settings)
            return await stack.enter_async_context(transport)

        yield make


@pytest.fixture
async def transport(make_transport: MakeTransport) -> RedisStreamsTransport:
    made: RedisStreamsTransport = await make_transport()
    return made


@pytest.fixture
async def raw(url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(url)
    yield client
    await client.aclose()


@pytest.fixture
async def queue(raw: Redis) -> AsyncIterator[str]:
    name = f"rt-{uuid.uuid4().hex[:12]}"
    yield name
    await raw.delete(stream_key(name), stream_key(dead_letter_queue(name)))


async def fetch_n(
    member: RedisSubscription, count: int, timeout_s: float = COLLECT_TIMEOUT_S
) -> list[Delivery]:
    """Up to ``count`` deliveries, stopping as soon as they are there."""
    deadline = time.monotonic() + timeout_s
    got: list[Delivery] = []
    while len(got) < count and time.monotonic() < deadline:
        got.extend(await member.fetch(count - len(got), POLL_S))
    return got


async def counts(transport: RedisStreamsTransport, queue: str) -> tuple[int, int]:
    backlog = await transport.backlog(queue, GROUP)
    return backlog.pending, backlog.in_flight


async def group_info(raw: Redis, queue: str) -> dict[str, Any]:
    [info] = await raw.xinfo_groups(stream_key(queue))
    return {str(key): value for key, value in info.items()}


async def consumers(raw: Redis, queue: str) -> dict[str, int]:
    """Each consumer of the group and how many entries it holds."""
    listed = await raw.xinfo_consumers(stream_key(queue), GROUP)
    return {entry["name"].decode(): entry["pending"] for entry in listed}


async def test_declare_makes_an_empty_stream_once(
    transport: RedisStreamsTransport, raw: Redis, queue: str
) -> None:
    await transport.declare(queue)
    await transport.declare(queue)
    assert await raw.type(stream_key(queue)) == b"stream"
    assert await raw.xlen(stream_key(queue)) == 0
    assert await raw.xinfo_groups(stream_key(queue)) == []

    await transport.publish(queue, b"kept")
    await transport.declare(queue)
    assert await raw.xlen(stream_key(queue)) == 1


async def test_delivery_is_the_stream_entry_and_ack_deletes_it(
    transport: RedisStreamsTransport, raw: Redis, queue: str
) -> None:
    await transport.declare(queue)
    await transport.publish(queue, b"one")
    entries: Any = await raw.xrange(stream_key(queue))
    [(entry_id, _)] = entries

    async with await transport.subscribe(queue, GROUP, "m1") as member:
        [delivery] = await fetch_n(member, 1)
        assert (delivery.id, delivery.body, delivery.attempt) == (entry_id.decode(), b"one", 1)
        assert await counts(transport, queue) == (0, 1)
        await delivery.ack()

    assert await raw.xlen(stream_key(queue)) == 0
    assert await counts(transport, queue) == (0, 0)


async def test_two_members_share_work_without_duplicates(
    make_transport: MakeTransport, transport: RedisStreamsTransport, queue: str
) -> None:
    other: RedisStreamsTransport = await make_transport()
    expected = {f"job-{i}".encode() for i in range(40)}
    await transport.declare(queue)
    async with (
        await transport.subscribe(queue, GROUP, "m1") as first,
        await other.subscribe(queue, GROUP, "m2") as second,
    ):
        received: list[list[bytes]] = [[], []]

        async def consume(index: int, member: RedisSubscription) -> None:
            while len(received[0]) + len(received[1]) < len(expected):
                for delivery in await member.fetch(3, POLL_S):
                    await asyncio.sleep(0.002)  # a short run, so both members get work
                    received[index].append(delivery.body)
                    await delivery.ack()

        for body in sorted(expected):
            await transport.publish(queue, body)
        async with asyncio.timeout(COLLECT_TIMEOUT_S):
            await asyncio.gather(consume(0, first), consume(1, second))

    everything = received[0] + received[1]
    assert sorted(everything) == sorted(expected)
    assert all(received), "both members should have worked"


async def test_nack_parks_the_entry_and_it_comes_back_with_the_next_attempt(
    transport: RedisStreamsTransport, raw: Redis, queue: str
) -> None:
    await transport.declare(queue)
    await transport.publish(queue, b"retry me")

    async with await transport.subscribe(queue, GROUP, "m1") as member:
        [first] = await fetch_n(member, 1)
        await first.nack()
        assert await consumers(raw, queue) == {"m1": 0, RETURNED: 1}
        assert await counts(transport, queue) == (1, 0)

        [again] = await fetch_n(member, 1)
        assert (again.id, again.body, again.attempt) == (first.id, b"retry me", 2)
        await again.nack()
        [third] = await fetch_n(member, 1)
        assert third.attempt == 3
        await third.ack()

    assert await counts(transport, queue) == (0, 0)


async def test_nack_delay_counts_as_pending_and_is_capped_at_claim_min_idle(
    make_transport: MakeTransport, queue: str
) -> None:
    transport: RedisStreamsTransport = await make_transport(claim_min_idle_ms=SHORT_IDLE_MS)
    await transport.declare(queue)
    await transport.publish(queue, b"later")

    async with await transport.subscribe(queue, GROUP, "m1") as member:
        [first] = await fetch_n(member, 1)
        nacked_at = time.monotonic()
        await first.nack(60.0)
        assert await counts(transport, queue) == (1, 0)
        assert await member.fetch(1, 0.0) == []

        [again] = await fetch_n(member, 1)
        waited_s = time.monotonic() - nacked_at
        assert SHORT_IDLE_MS / 1000 * 0.9 <= waited_s < 5.0
        assert again.attempt == 2
        await again.ack()


async def test_close_without_ack_hands_work_to_another_member_at_once(
    make_transport: MakeTransport, transport: RedisStreamsTransport, raw: Redis, queue: str
) -> None:
    await transport.declare(queue)
    bodies = {b"a", b"b", b"c"}
    for body in sorted(bodies):
        await transport.publish(queue, body)

    quitter = await transport.subscribe(queue, GROUP, "quitter")
    taken = await fetch_n(quitter, len(bodies))
    assert {d.body for d in taken} == bodies
    await quitter.close()
    assert await consumers(raw, queue) == {RETURNED: 3}
    assert await counts(transport, queue) == (3, 0)

    other: RedisStreamsTransport = await make_transport()  # default 30 s claim_min_idle
    async with await other.subscribe(queue, GROUP, "heir") as heir:
        started = time.monotonic()
        redelivered = await fetch_n(heir, len(bodies))
        assert time.monotonic() - started < 2.0
        assert {(d.body, d.attempt) for d in redelivered} == {(b, 2) for b in bodies}
        for delivery in redelivered:
            await delivery.ack()


async def test_work_of_a_vanished_member_is_reclaimed_after_claim_min_idle(
    make_transport: MakeTransport, queue: str
) -> None:
    crashed: RedisStreamsTransport = await make_transport(claim_min_idle_ms=SHORT_IDLE_MS)
    survivor: RedisStreamsTransport = await make_transport(claim_min_idle_ms=SHORT_IDLE_MS)
    await crashed.declare(queue)
    await crashed.publish(queue, b"orphan")

    lost = await crashed.subscribe(queue, GROUP, "lost")
    [taken] = await fetch_n(lost, 1)
    taken_at = time.monotonic()
    crashed.subscriptions.clear()  # it never closes: nothing is released
    assert await counts(survivor, queue) == (0, 1)

    async with await survivor.subscribe(queue, GROUP, "survivor") as member:
        [reclaimed] = await fetch_n(member, 1)
        assert time.monotonic() - taken_at >= SHORT_IDLE_MS / 1000 * 0.9
        assert (reclaimed.id, reclaimed.attempt) == (taken.id, 2)

        await taken.nack()  # the lost member's late nack must not steal it back
        assert await counts(survivor, queue) == (0, 1)
        await reclaimed.ack()
    assert await counts(survivor, queue) == (0, 0)


async def test_idle_entries_of_another_member_count_as_pending(
    make_transport: MakeTransport, queue: str
) -> None:
    transport: RedisStreamsTransport = await make_transport(claim_min_idle_ms=SHORT_IDLE_MS)
    await transport.declare(queue)
    await transport.publish(queue, b"stuck")
    member = await transport.subscribe(queue, GROUP, "slow")
    [delivery] = await fetch_n(member, 1)
    assert await counts(transport, queue) == (0, 1)

    await asyncio.sleep(SHORT_IDLE_MS / 1000 * 1.5)  # nothing to await: idleness is time
    assert await counts(transport, queue) == (1, 0)
    await delivery.in_progress()
    assert await counts(transport, queue) == (0, 1)
    await delivery.ack()
    await member.close()


async def test_in_progress_keeps_a_long_run_from_being_reclaimed(
    make_transport: MakeTransport, queue: str
) -> None:
    transport: RedisStreamsTransport = await make_transport(claim_min_idle_ms=SHORT_IDLE_MS)
    await transport.declare(queue)
    await transport.publish(queue, b"long run")

    async with (
        await transport.subscribe(queue, GROUP, "runner") as runner,
        await transport.subscribe(queue, GROUP, "thief") as thief,
    ):
        [delivery] = await fetch_n(runner, 1)

        async def keep_alive() -> None:
            for _ in range(8):
                await asyncio.sleep(SHORT_IDLE_MS / 1000 / 3)
                await delivery.in_progress()

        keeper = asyncio.create_task(keep_alive())
        while not keeper.done():
            assert await thief.fetch(1, 0.1) == []
        await keeper
        await delivery.ack()


async def test_backlog_counts_are_exact_when_lag_is_null(
    transport: RedisStreamsTransport, raw: Redis, queue: str
) -> None:
    await transport.declare(queue)
    for i in range(6):
        await transport.publish(queue, f"m{i}".encode())

    async with await transport.subscribe(queue, GROUP, "m1") as member:
        first, second, third = await fetch_n(member, 3)
        assert await counts(transport, queue) == (3, 3)
        await third.ack()  # deletes the last-delivered entry while older ones remain
        assert (await group_info(raw, queue))["lag"] is None
        assert await counts(transport, queue) == (3, 2)
        await first.nack()
        assert await counts(transport, queue) == (4, 1)
        await second.ack()
        assert await counts(transport, queue) == (4, 0)
        rest = await fetch_n(member, 4)
        assert sorted(d.body for d in rest) == [b"m0", b"m3", b"m4", b"m5"]
        for delivery in rest:
            await delivery.ack()
    assert await counts(transport, queue) == (0, 0)
    assert await raw.xlen(stream_key(queue)) == 0


async def test_backlog_after_trimming_never_counts_more_than_the_stream_holds(
    transport: RedisStreamsTransport, raw: Redis, queue: str
) -> None:
    await transport.declare(queue)
    for i in range(6):
        await transport.publish(queue, f"m{i}".encode())
    async with await transport.subscribe(queue, GROUP, "m1") as member:
        taken = await fetch_n(member, 2)
        await raw.xtrim(stream_key(queue), maxlen=3, approximate=False)

        backlog = await transport.backlog(queue, GROUP)
        assert (backlog.pending, backlog.in_flight) == (3, 2)
        assert backlog.oldest_age_s is not None
        assert 0 <= backlog.oldest_age_s < 60
        for delivery in taken:
            await delivery.ack()


async def test_backlog_of_missing_stream_and_of_a_group_that_never_subscribed(
    transport: RedisStreamsTransport, queue: str
) -> None:
    assert await transport.backlog(queue, GROUP) == await transport.backlog(queue, "other")
    assert await counts(transport, queue) == (0, 0)
    for i in range(4):
        await transport.publish(queue, f"m{i}".encode())
    backlog = await transport.backlog(queue, GROUP)
    assert (backlog.pending, backlog.in_flight) == (4, 0)
    assert backlog.oldest_age_s is not None


async def test_a_second_group_keeps_entries_the_first_acked(
    transport: RedisStreamsTransport, raw: Redis, queue: str
) -> None:
    await transport.declare(queue)
    await transport.publish(queue, b"shared")
    async with (
        await transport.subscribe(queue, GROUP, "m1") as first,
        await transport.subscribe(queue, "auditors", "m1") as second,
    ):
        [mine] = await fetch_n(first, 1)
        await mine.ack()
        assert await raw.xlen(stream_key(queue)) == 1
        [theirs] = await fetch_n(second, 1)
        assert theirs.body == b"shared"
        await theirs.ack()


async def test_backlogs_batch_many_streams_in_one_call(
    transport: RedisStreamsTransport, raw: Redis
) -> None:
    names = [f"rt-{uuid.uuid4().hex[:12]}" for _ in range(50)]
    try:
        for count, name in enumerate(names):
            for i in range(count % 4):
                await transport.publish(name, f"m{i}".encode())
        batch = await transport.backlogs([(name, GROUP) for name in names])
        assert [b.pending for b in batch] == [count % 4 for count in range(len(names))]
        assert await transport.backlogs([]) == []
    finally:
        await raw.delete(*(stream_key(name) for name in names))


async def test_backlogs_reload_a_script_redis_lost(
    transport: RedisStreamsTransport, raw: Redis, queue: str
) -> None:
    await transport.publish(queue, b"x")
    await raw.script_flush()
    assert [b.pending for b in await transport.backlogs([(queue, GROUP)])] == [1]


async def test_deleting_a_queue_under_a_member_recreates_its_group_on_fetch(
    transport: RedisStreamsTransport, queue: str
) -> None:
    member = await transport.subscribe(queue, GROUP, "m1")
    await transport.delete(queue)
    await transport.publish(queue, b"after delete")
    [delivery] = await fetch_n(member, 1)
    assert delivery.body == b"after delete"
    await transport.delete(queue)
    await delivery.ack()
    await member.close()


async def test_blocking_reads_have_a_socket_timeout_longer_than_block(
    make_transport: MakeTransport,
) -> None:
    transport: RedisStreamsTransport = await make_transport(block_ms=8_000)
    kwargs = transport.blocking.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] > 8.0


async def test_channel_round_trip_after_listen(
    transport: RedisStreamsTransport, make_transport: MakeTransport, raw: Redis
) -> None:
    channel = f"replies-{uuid.uuid4().hex[:12]}"
    sender: RedisStreamsTransport = await make_transport()
    async with await transport.listen(channel) as listener:
        assert await raw.pubsub_numsub(channel_key(channel)) == [(channel_key(channel).encode(), 1)]
        await sender.send(channel, b"\x00reply\xff")
        assert await listener.receive(5.0) == b"\x00reply\xff"
        assert await listener.receive(0.1) is None
    assert await raw.pubsub_numsub(channel_key(channel)) == [(channel_key(channel).encode(), 0)]


async def test_oversize_payload_is_refused_before_redis(
    make_transport: MakeTransport, raw: Redis, queue: str
) -> None:
    transport: RedisStreamsTransport = await make_transport()
    with pytest.raises(PayloadTooLarge):
        await transport.publish(queue, b"x" * (transport.max_message_bytes + 1))
    assert await raw.exists(stream_key(queue)) == 0


async def test_unreachable_redis_fails_fast() -> None:
    lost = RedisStreamsTransport("redis://127.0.0.1:1/0")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        await lost.connect()
    with pytest.raises(BrokerUnavailable):
        await lost.publish("q", b"x")
    assert time.monotonic() - started < 5.0
    await lost.close()


async def test_ping_names_the_server(transport: RedisStreamsTransport) -> None:
    description = await transport.ping()
    assert description.startswith("redis 7.") or description.startswith("redis 8.")
    assert " at " in description


async def test_reserved_member_name_is_refused(
    transport: RedisStreamsTransport, queue: str
) -> None:
    with pytest.raises(ValueError, match="reserved"):
        await transport.subscribe(queue, GROUP, RETURNED)


def test_missing_client_library_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    with pytest.raises(TransportNotInstalled, match=r"broker-sched\[redis\]"):
        RedisStreamsTransport()
