"""Queues: durable, shared by a group's members, at-least-once."""

from __future__ import annotations

import asyncio
import random

import anyio
import pytest
from brokers import TransportFactory

from transports.base import Listener, Subscription, Transport

from .support import COLLECT_TIMEOUT_S, POLL_S, drain, fetch_n, settle

GROUP = "workers"
SETTLE_S = 3.0
"""Comfortably above the test heartbeat interval (1 s), after which Kafka members rejoin."""
CANCEL_WITHIN_S = 5.0


async def test_declare_is_idempotent_and_keeps_messages(transport: Transport, queue: str) -> None:
    await transport.declare(queue)
    await transport.declare(queue)
    await transport.publish(queue, b"first")
    await transport.declare(queue)
    await transport.publish(queue, b"second")

    async with await transport.subscribe(queue, GROUP, "m1") as member:
        deliveries = await fetch_n(member, 2)
        assert sorted(d.body for d in deliveries) == [b"first", b"second"]
        for delivery in deliveries:
            await delivery.ack()


async def test_publish_fetch_ack_round_trips_bytes_exactly(
    transport: Transport, queue: str
) -> None:
    bodies = [bytes(range(256)), "héllo wörld ✓ 日本語 🚀".encode(), b'{"v": 1}\n\x00\xff']
    await transport.declare(queue)
    for body in bodies:
        await transport.publish(queue, body)

    async with await transport.subscribe(queue, GROUP, "m1") as member:
        deliveries = await fetch_n(member, len(bodies))
        assert sorted(d.body for d in deliveries) == sorted(bodies)
        assert all(d.attempt == 1 for d in deliveries)
        assert all(isinstance(d.id, str) and d.id for d in deliveries)
        assert len({d.id for d in deliveries}) == len(bodies)
        for delivery in deliveries:
            await delivery.ack()
        assert await member.fetch(1, 0.5) == []

    backlog = await transport.backlog(queue, GROUP)
    assert (backlog.pending, backlog.in_flight) == (0, 0)


async def test_fetch_on_empty_queue_returns_nothing_within_timeout(
    transport: Transport, queue: str
) -> None:
    await transport.declare(queue)
    async with await transport.subscribe(queue, GROUP, "m1") as member:
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await member.fetch(10, 0.5) == []
        assert loop.time() - started < 0.5 + 1.5


async def test_members_of_one_group_share_work_without_duplicates(
    transport: Transport, make_transport: TransportFactory, queue: str
) -> None:
    partitions = 2 if transport.capabilities.partitioned else 1
    await transport.declare(queue, partitions=partitions)
    other = await make_transport()
    async with (
        await transport.subscribe(queue, GROUP, "m1") as first,
        await other.subscribe(queue, GROUP, "m2") as second,
    ):
        if transport.capabilities.rebalances:
            await settle([first, second], SETTLE_S)
        expected = {f"job-{i}".encode() for i in range(20)}
        for body in sorted(expected):
            await transport.publish(queue, body, key=body.decode())

        received = await drain([first, second], expected)

    everything = [body for bodies in received for body in bodies]
    assert set(everything) == expected, f"missing: {sorted(expected - set(everything))}"
    assert len(everything) == len(expected), "a message was delivered to two members"


async def test_group_subscribing_late_receives_earlier_messages(
    transport: Transport, queue: str
) -> None:
    await transport.declare(queue)
    for i in range(3):
        await transport.publish(queue, f"early-{i}".encode())

    async with await transport.subscribe(queue, "latecomers", "m1") as member:
        deliveries = await fetch_n(member, 3)
        assert sorted(d.body for d in deliveries) == [b"early-0", b"early-1", b"early-2"]
        for delivery in deliveries:
            await delivery.ack()


async def test_nack_redelivers_with_next_attempt(transport: Transport, queue: str) -> None:
    await transport.declare(queue)
    await transport.publish(queue, b"retry me")

    async with await transport.subscribe(queue, GROUP, "m1") as member:
        [first] = await fetch_n(member, 1)
        assert first.attempt == 1
        await first.nack()

        [again] = await fetch_n(member, 1)
        assert again.body == b"retry me"
        assert again.attempt == 2
        await again.ack()


async def test_nack_with_delay_is_not_redelivered_early(transport: Transport, queue: str) -> None:
    delay_s = 0.5
    await transport.declare(queue)
    await transport.publish(queue, b"later")

    async with await transport.subscribe(queue, GROUP, "m1") as member:
        [first] = await fetch_n(member, 1)
        loop = asyncio.get_running_loop()
        nacked_at = loop.time()
        await first.nack(delay_s)

        [again] = await fetch_n(member, 1)
        assert loop.time() - nacked_at >= delay_s * 0.9
        assert again.body == b"later"
        assert again.attempt == 2
        await again.ack()


async def test_work_of_a_member_closed_without_acking_goes_to_another(
    transport: Transport, make_transport: TransportFactory, queue: str
) -> None:
    await transport.declare(queue)
    bodies = {b"a", b"b", b"c"}
    for body in sorted(bodies):
        await transport.publish(queue, body)

    quitter = await transport.subscribe(queue, GROUP, "quitter")
    taken = await fetch_n(quitter, len(bodies))
    assert {d.body for d in taken} == bodies
    await quitter.close()

    other = await make_transport()
    async with await other.subscribe(queue, GROUP, "heir") as heir:
        redelivered = await fetch_n(heir, len(bodies))
        assert {d.body for d in redelivered} == bodies
        for delivery in redelivered:
            await delivery.ack()


async def test_cancelling_consumer_loops_always_ends_them(transport: Transport, queue: str) -> None:
    """However the cancellation lands — mid-command, or as a command completes, where
    Python 3.11's ``wait_for`` inside some clients would swallow it — consumer loops and
    channel listeners in a cancelled task group end, and work they took goes back to the
    group."""
    await transport.declare(queue)
    channel = f"{queue}-replies"
    members = [await transport.subscribe(queue, GROUP, f"m{i}") for i in range(8)]
    listeners = [await transport.listen(channel) for _ in range(4)]

    async def consume(member: Subscription) -> None:
        while True:
            await member.fetch(4, 0.05)

    async def listen(listener: Listener) -> None:
        while True:
            await listener.receive(0.05)

    rng = random.Random(7)
    try:
        for _ in range(15):
            async with anyio.create_task_group() as loops:
                for member in members:
                    loops.start_soon(consume, member)
                for listener in listeners:
                    loops.start_soon(listen, listener)
                await transport.publish(queue, b"work")
                await anyio.sleep(rng.uniform(0.0, 0.15))
                loops.cancel_scope.cancel()
                cancelled_s = anyio.current_time()
            took_s = anyio.current_time() - cancelled_s
            assert took_s < CANCEL_WITHIN_S, f"cancelled consumer loops ran on for {took_s:.1f} s"
    finally:
        for listener in listeners:
            await listener.close()
        for member in members:
            await member.close()

    async with await transport.subscribe(queue, GROUP, "after") as after:
        left = await fetch_n(after, 15)
        assert len(left) == 15, "work taken by a cancelled fetch was lost"
        for delivery in left:
            await delivery.ack()


async def test_reply_and_ack_sends_the_reply_and_finishes_the_work(
    transport: Transport, queue: str
) -> None:
    """Many at once too: backends that batch commands must keep every caller's pair."""
    channel = f"{queue}-replies"
    bodies = [f"work {index}".encode() for index in range(40)]
    await transport.declare(queue)
    for body in bodies:
        await transport.publish(queue, body)

    async with (
        await transport.listen(channel) as listener,
        await transport.subscribe(queue, GROUP, "m1") as member,
    ):
        answered = 0
        loop = asyncio.get_running_loop()
        deadline_s = loop.time() + COLLECT_TIMEOUT_S
        while answered < len(bodies) and loop.time() < deadline_s:
            # all a member holds at once (a share-group member acquires 16 per poll)
            deliveries = await member.fetch(len(bodies) - answered, POLL_S)
            await asyncio.gather(
                *(transport.reply_and_ack(d, channel, b"done: " + d.body) for d in deliveries)
            )
            answered += len(deliveries)
        assert answered == len(bodies)
        replies = set()
        while len(replies) < len(bodies):
            reply = await listener.receive(5.0)
            assert reply is not None, f"only {len(replies)} of {len(bodies)} replies arrived"
            replies.add(reply)
        assert replies == {b"done: " + body for body in bodies}
        assert await member.fetch(1, 0.5) == []

    backlog = await transport.backlog(queue, GROUP)
    assert (backlog.pending, backlog.in_flight) == (0, 0)


@pytest.mark.requires(publishes_once=True)
async def test_publish_once_refuses_a_second_copy_of_an_id(
    transport: Transport, queue: str
) -> None:
    """Ids are remembered across queues (a NATS stream's, for its duplicate window), so
    each run uses its own."""
    await transport.declare(queue)
    assert await transport.publish_once(queue, b"copy", f"{queue}-1")
    assert not await transport.publish_once(queue, b"copy", f"{queue}-1")
    assert await transport.publish_once(queue, b"other", f"{queue} with space\r\n")

    async with await transport.subscribe(queue, GROUP, "m1") as member:
        deliveries = await fetch_n(member, 2)
        assert sorted(d.body for d in deliveries) == [b"copy", b"other"]
        for delivery in deliveries:
            await delivery.ack()
        assert await member.fetch(1, 0.5) == []
