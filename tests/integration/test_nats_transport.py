"""The NATS JetStream transport against a real server: what the contract suite cannot see.

The WorkQueue stream and its durable consumers, double acks, ack_wait redelivery, the
pull protocol's edge cases, channels, size limits and fast failure. The server comes from
``BROKER_SCHED_TEST_NATS``, else 127.0.0.1:4222 when something listens there, else the
shared ``nats_url`` fixture (a container, or skip). Every test gets its own stream and
subject prefix, deleted at the end, so tests never see each other's messages.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

import pytest
from brokers import BROKERS, closed_address, reachable, settings_for

from broker_sched.errors import (
    BrokerUnavailable,
    ConfigError,
    PayloadTooLarge,
    TransportError,
    TransportNotInstalled,
)
from transports.base import Delivery, Subscription
from transports.nats_jetstream import (
    NatsJetStreamTransport,
    channel_subject,
    consumer_name,
    queue_subject,
)
from transports.registry import resolve

pytestmark = pytest.mark.broker

NATIVE_SERVER = "nats://127.0.0.1:4222"
GROUP = "workers"
COLLECT_TIMEOUT_S = 10.0
POLL_S = 0.5
SHORT_ACK_WAIT_S = 1.0

MakeTransport = Callable[..., Awaitable[NatsJetStreamTransport]]


@pytest.fixture
def server(request: pytest.FixtureRequest) -> str:
    if not os.environ.get(BROKERS["nats"].address_env) and reachable(NATIVE_SERVER):
        return NATIVE_SERVER
    return str(request.getfixturevalue("nats_url"))


@pytest.fixture
async def make_transport(server: str) -> AsyncIterator[MakeTransport]:
    """``await make_transport(**nats_overrides)``: another connected client (like another
    process) on this test's own stream; the stream is deleted when the test ends."""
    tag = uuid.uuid4().hex[:10]
    own = {"stream": f"TEST_{tag}", "subject_prefix": f"t{tag}"}
    async with AsyncExitStack() as stack:

        async def make(max_payload_bytes: int | None = None, **nats: Any) -> NatsJetStreamTransport:
            top = {} if max_payload_bytes is None else {"max_payload_bytes": max_payload_bytes}
            settings = settings_for("nats", server, nats={**own, **nats}, **top)
            return await stack.enter_async_context(NatsJetStreamTransport.from_settings(settings))

        admin = await make()
        stack.push_async_callback(admin.jetstream().delete_stream, own["stream"])
        yield make


@pytest.fixture
async def transport(make_transport: MakeTransport) -> NatsJetStreamTransport:
    return await make_transport()


@pytest.fixture
def queue() -> str:
    return f"ns-{uuid.uuid4().hex[:8]}.hello"


async def fetch_n(
    member: Subscription, count: int, timeout_s: float = COLLECT_TIMEOUT_S
) -> list[Delivery]:
    """Up to ``count`` deliveries, stopping as soon as they are there."""
    deadline = time.monotonic() + timeout_s
    got: list[Delivery] = []
    while len(got) < count and time.monotonic() < deadline:
        got.extend(await member.fetch(count - len(got), POLL_S))
    return got


async def counts(transport: NatsJetStreamTransport, queue: str) -> tuple[int, int]:
    backlog = await transport.backlog(queue, GROUP)
    return backlog.pending, backlog.in_flight


async def stored(transport: NatsJetStreamTransport) -> int:
    info = await transport.jetstream().stream_info(transport.stream)
    return info.state.messages


# -- names ----------------------------------------------------------------------------


def test_names_are_valid_deterministic_and_distinct() -> None:
    assert queue_subject("act", "guest-hello.v2") == "act.guest-hello.v2"
    assert channel_subject("act", "replies.c1") == "_chan.act.replies.c1"
    assert consumer_name("a.b", "g") == consumer_name("a.b", "g")
    assert consumer_name("a.b", "g") != consumer_name("a_b", "g")
    for name in (consumer_name("a.b", "g"), consumer_name("q", "group/with spaces.x")):
        assert not set(name) & set(". */\\>")
    for bad in ("", "a..b", ".a", "a.", "a*", "a>", "a b"):
        with pytest.raises(ValueError, match="subject"):
            queue_subject("act", bad)


def test_registered_by_name_and_missing_client_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert resolve("nats") is NatsJetStreamTransport
    monkeypatch.setitem(sys.modules, "nats", None)  # makes `import nats` fail
    with pytest.raises(TransportNotInstalled, match=r"broker-sched\[nats\]"):
        NatsJetStreamTransport()


# -- stream and queues ------------------------------------------------------------------


async def test_declare_is_idempotent_and_makes_one_workqueue_stream(
    transport: NatsJetStreamTransport, queue: str
) -> None:
    await transport.declare(queue)
    await transport.publish(queue, b"kept")
    await transport.declare(queue)
    await transport.declare(f"{queue}.other")

    info = await transport.jetstream().stream_info(transport.stream)
    assert info.config.retention == "workqueue"
    assert info.config.subjects == [f"{transport.subject_prefix}.>"]
    assert (await transport.backlog(queue, GROUP)).total == 1


async def test_publish_fetch_ack_removes_the_message(
    transport: NatsJetStreamTransport, queue: str
) -> None:
    await transport.declare(queue)
    await transport.publish(queue, b"one")
    await transport.publish(queue, b"two")

    async with await transport.subscribe(queue, GROUP, "m1") as member:
        first, second = await fetch_n(member, 2)
        assert (first.body, second.body) == (b"one", b"two")
        assert (first.attempt, second.attempt) == (1, 1)
        assert int(second.id) == int(first.id) + 1  # ids are stream sequences
        await first.ack()
        await first.ack()  # a second ack is a no-op, not an error
        await second.ack()
        # the double ack returned after the server applied it: no waiting needed
        assert await counts(transport, queue) == (0, 0)
        assert await stored(transport) == 0


async def test_fetch_returns_available_work_at_once(
    transport: NatsJetStreamTransport, queue: str
) -> None:
    await transport.declare(queue)
    for i in range(3):
        await transport.publish(queue, f"m{i}".encode())

    async with await transport.subscribe(queue, GROUP, "m1") as member:
        started = time.monotonic()
        batch = await member.fetch(10, 5.0)
        assert [d.body for d in batch] == [b"m0", b"m1", b"m2"]
        assert time.monotonic() - started < 1.0
        waiter = asyncio.create_task(member.fetch(10, 5.0))
        await transport.publish(queue, b"late")
        [late] = await waiter
        assert late.body == b"late"
        assert time.monotonic() - started < 2.0
        for delivery in [*batch, late]:
            await delivery.ack()


async def test_two_members_share_work_without_duplicates(
    transport: NatsJetStreamTransport, make_transport: MakeTransport, queue: str
) -> None:
    await transport.declare(queue)
    other = await make_transport()
    expected = {f"job-{i}".encode() for i in range(40)}
    for body in sorted(expected):
        await transport.publish(queue, body)

    received: list[list[bytes]] = [[], []]
    async with (
        await transport.subscribe(queue, GROUP, "m1") as first,
        await other.subscribe(queue, GROUP, "m2") as second,
    ):

        async def consume(index: int, member: Subscription) -> None:
            while sum(map(len, received)) < len(expected):
                for delivery in await member.fetch(3, POLL_S):
                    received[index].append(delivery.body)
                    await delivery.ack()

        async with asyncio.timeout(COLLECT_TIMEOUT_S):
            await asyncio.gather(consume(0, first), consume(1, second))

    everything = [body for bodies in received for body in bodies]
    assert sorted(everything) == sorted(expected), "lost or duplicated work"
    assert all(received), "one member got no work at all"


async def test_second_group_on_a_queue_is_refused_clearly(
    transport: NatsJetStreamTransport, queue: str
) -> None:
    await transport.declare(queue)
    async with await transport.subscribe(queue, GROUP, "m1"):
        with pytest.raises(TransportError, match="one group per queue"):
            await transport.subscribe(queue, "another-group", "m1")


async def test_delete_removes_consumer_and_messages_but_keeps_the_stream(
    transport: NatsJetStreamTransport, queue: str
) -> None:
    await transport.declare(queue)
    await transport.declare(f"{queue}.kept")
    await transport.publish(queue, b"gone")
    await transport.publish(f"{queue}.kept", b"stays")
    async with await transport.subscribe(queue, GROUP, "m1"):
        pass

    await transport.delete(queue)
    await transport.delete(queue)  # missing is fine

    assert await counts(transport, queue) == (0, 0)
    consumers = await transport.jetstream().consumers_info(transport.stream)
    assert consumer_name(queue, GROUP) not in {c.name for c in consumers}
    assert await stored(transport) == 1
    await transport.delete(f"{queue}.kept")
    assert await stored(transport) == 0


# -- redelivery -------------------------------------------------------------------------


async def test_nack_redelivers_as_attempt_two_and_honours_the_delay(
    transport: NatsJetStreamTransport, queue: str
) -> None:
    await transport.declare(queue)
    await transport.publish(queue, b"retry me")

    async with await transport.subscribe(queue, GROUP, "m1") as member:
        [first] = await fetch_n(member, 1)
        await first.nack()
        [second] = await fetch_n(member, 1)
        assert (second.body, second.attempt, second.id) == (b"retry me", 2, first.id)

        nacked_at = time.monotonic()
        await second.nack(0.6)
        assert await member.fetch(1, 0.3) == []
        [third] = await fetch_n(member, 1)
        assert time.monotonic() - nacked_at >= 0.55
        assert third.attempt == 3
        await third.ack()


async def test_closing_without_ack_hands_work_to_another_member_at_once(
    make_transport: MakeTransport, queue: str
) -> None:
    quitter_side = await make_transport(ack_wait_s=30.0)
    heir_side = await make_transport(ack_wait_s=30.0)
    await quitter_side.declare(queue)
    bodies = {b"a", b"b", b"c"}
    for body in sorted(bodies):
        await quitter_side.publish(queue, body)

    quitter = await quitter_side.subscribe(queue, GROUP, "quitter")
    assert {d.body for d in await fetch_n(quitter, 3)} == bodies
    await quitter.close()
    await quitter.close()

    async with await heir_side.subscribe(queue, GROUP, "heir") as heir:
        started = time.monotonic()
        redelivered = await fetch_n(heir, 3)
        assert {d.body for d in redelivered} == bodies
        assert all(d.attempt == 2 for d in redelivered)
        assert time.monotonic() - started < 5.0, "waited for ack_wait instead of the naks"
        for delivery in redelivered:
            await delivery.ack()


async def test_vanished_member_work_is_redelivered_after_ack_wait(
    make_transport: MakeTransport, queue: str
) -> None:
    doomed = await make_transport(ack_wait_s=SHORT_ACK_WAIT_S)
    survivor = await make_transport(ack_wait_s=SHORT_ACK_WAIT_S)
    await doomed.declare(queue)
    await doomed.publish(queue, b"orphan")

    member = await doomed.subscribe(queue, GROUP, "doomed")
    [taken] = await fetch_n(member, 1)
    vanished_at = time.monotonic()
    await doomed.client().close()  # the process dies: no close(), no nak

    async with await survivor.subscribe(queue, GROUP, "survivor") as heir:
        [again] = await fetch_n(heir, 1)
        waited_s = time.monotonic() - vanished_at
        assert (again.body, again.attempt, again.id) == (b"orphan", 2, taken.id)
        assert SHORT_ACK_WAIT_S * 0.8 <= waited_s < SHORT_ACK_WAIT_S + 5.0
        await again.ack()


async def test_in_progress_keeps_a_long_run_from_being_redelivered(
    make_transport: MakeTransport, queue: str
) -> None:
    worker_side = await make_transport(ack_wait_s=SHORT_ACK_WAIT_S)
    await worker_side.declare(queue)
    await worker_side.publish(queue, b"long run")

    async with (
        await worker_side.subscribe(queue, GROUP, "worker") as worker,
        await worker_side.subscribe(queue, GROUP, "idle") as idle,
    ):
        [running] = await fetch_n(worker, 1)
        for _ in range(5):  # 5 x 0.4 s = twice ack_wait, signalling progress in between
            assert await idle.fetch(1, 0.4) == []
            await running.in_progress()
        await running.ack()
        assert await counts(worker_side, queue) == (0, 0)


async def test_message_sent_to_a_cancelled_fetch_is_given_back_on_close(
    make_transport: MakeTransport, queue: str
) -> None:
    """A fetch cancelled mid-wait leaves its pull request open on the server, which then
    delivers into the member's inbox with nobody waiting; close() must nak that too."""
    first_side = await make_transport(ack_wait_s=30.0)
    second_side = await make_transport(ack_wait_s=30.0)
    await first_side.declare(queue)
    member = await first_side.subscribe(queue, GROUP, "cancelled")
    waiting = asyncio.create_task(member.fetch(1, 3.0))
    await pull_requests_waiting(first_side, queue, 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting

    await first_side.publish(queue, b"caught")
    await member.close()

    async with await second_side.subscribe(queue, GROUP, "heir") as heir:
        [delivery] = await fetch_n(heir, 1, timeout_s=5.0)
        assert (delivery.body, delivery.attempt) == (b"caught", 2)
        await delivery.ack()


async def pull_requests_waiting(transport: NatsJetStreamTransport, queue: str, count: int) -> None:
    """There is no event for "the server holds the pull request", so poll consumer info."""
    async with asyncio.timeout(5.0):
        while True:
            info = await transport.jetstream().consumer_info(
                transport.stream, consumer_name(queue, GROUP)
            )
            if (info.num_waiting or 0) >= count:
                return
            await asyncio.sleep(0.02)


# -- backlog ----------------------------------------------------------------------------


async def test_backlog_is_exact_through_publish_fetch_ack_and_nack(
    transport: NatsJetStreamTransport, queue: str
) -> None:
    assert await counts(transport, queue) == (0, 0)  # never declared
    await transport.declare(queue)
    for i in range(5):
        await transport.publish(queue, f"m{i}".encode())
    assert await counts(transport, queue) == (5, 0)  # group never subscribed

    async with await transport.subscribe(queue, GROUP, "m1") as member:
        assert await counts(transport, queue) == (5, 0)
        taken = await fetch_n(member, 3)
        assert await counts(transport, queue) == (2, 3)
        await taken[0].ack()
        assert await counts(transport, queue) == (2, 2)
        await taken[1].nack(30.0)
        backlog = await transport.backlog(queue, GROUP)
        # a nacked message waits in the consumer's ack-pending set: in flight, not pending
        assert (backlog.pending, backlog.in_flight, backlog.total) == (2, 2, 4)
        assert backlog.partitions == 1
        assert backlog.oldest_age_s is None


async def test_backlogs_batch_matches_single_calls(
    transport: NatsJetStreamTransport, queue: str
) -> None:
    queues = [f"{queue}.{i}" for i in range(3)]
    for count, name in enumerate(queues, start=1):
        await transport.declare(name)
        for i in range(count):
            await transport.publish(name, f"m{i}".encode())
    async with await transport.subscribe(queues[2], GROUP, "m1") as member:
        [delivery] = await fetch_n(member, 1)
        pairs = [(name, GROUP) for name in [*queues, f"{queue}.missing"]]
        batch = await transport.backlogs(pairs)
        single = [await transport.backlog(q, g) for q, g in pairs]
        await delivery.ack()

    expected = [(1, 0), (2, 0), (2, 1), (0, 0)]
    assert [(b.pending, b.in_flight) for b in batch] == expected
    assert batch == single


# -- channels ---------------------------------------------------------------------------


async def test_channel_round_trip_skips_earlier_sends_and_stores_nothing(
    transport: NatsJetStreamTransport, make_transport: MakeTransport
) -> None:
    sender = await make_transport()
    channel = f"replies.{uuid.uuid4().hex[:8]}"
    await sender.send(channel, b"too early")
    await sender.ping()  # a round trip on the same connection: the send has reached the server

    async with await transport.listen(channel) as listener:
        for body in (b"reply 1", "réponse ✓".encode()):
            await sender.send(channel, body)
            assert await listener.receive(5.0) == body
        assert await listener.receive(0.2) is None
    assert await stored(transport) == 0


# -- limits and failures ----------------------------------------------------------------


async def test_oversize_payload_is_refused_before_the_server(
    make_transport: MakeTransport, queue: str
) -> None:
    transport = await make_transport(max_payload_bytes=1000)
    await transport.declare(queue)
    with pytest.raises(PayloadTooLarge, match="1001 bytes"):
        await transport.publish(queue, b"x" * 1001)
    await transport.publish(queue, b"x" * 1000)
    assert await counts(transport, queue) == (1, 0)


async def test_server_max_payload_below_the_setting_is_a_config_error(
    transport: NatsJetStreamTransport, make_transport: MakeTransport
) -> None:
    server_limit = transport.client().max_payload
    with pytest.raises(ConfigError, match="max_payload"):
        await make_transport(max_payload_bytes=server_limit + 1)


async def test_unreachable_server_fails_fast() -> None:
    lost = NatsJetStreamTransport.from_settings(settings_for("nats", closed_address("nats")))
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="no server reachable"):
        await lost.connect()
    assert time.monotonic() - started < lost.connect_timeout_s + 2.0
    with pytest.raises(BrokerUnavailable):
        await lost.publish("q", b"x")
    await lost.close()


async def test_calls_fail_at_once_while_disconnected(
    transport: NatsJetStreamTransport, queue: str
) -> None:
    await transport.declare(queue)
    await transport.client().close()
    started = time.monotonic()
    calls: Sequence[Callable[[], Awaitable[object]]] = (
        lambda: transport.publish(queue, b"x"),
        lambda: transport.backlog(queue, GROUP),
        lambda: transport.subscribe(queue, GROUP, "m1"),
        lambda: transport.send("replies", b"x"),
        transport.ping,
    )
    for call in calls:
        with pytest.raises(BrokerUnavailable):
            await call()
    assert time.monotonic() - started < 1.0
