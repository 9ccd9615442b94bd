"""Records: small documents one client puts and any other reads, until they expire."""

from __future__ import annotations

import asyncio
import uuid

from brokers import TransportFactory

from transports.base import Record, Transport

TTL_S = 600.0


def new_scope() -> str:
    return f"conf-{uuid.uuid4().hex[:12]}"


async def test_a_record_put_by_one_client_is_read_by_another(
    transport: Transport, make_transport: TransportFactory
) -> None:
    scope = new_scope()
    reader = await make_transport()
    assert await reader.get_record(scope, "01-a") is None

    await transport.put_record(scope, "01-a", b'{"n": 1}', TTL_S)
    await transport.put_record(scope, "01-a", b'{"n": 2}', TTL_S)

    assert await reader.get_record(scope, "01-a") == b'{"n": 2}', "a put replaces"
    assert await reader.get_record(scope, "01-b") is None
    assert await reader.get_record(new_scope(), "01-a") is None, "scopes are separate"


async def test_recent_records_are_the_newest_of_the_scope(
    transport: Transport, make_transport: TransportFactory
) -> None:
    scope, other = new_scope(), new_scope()
    for index in range(5):
        await transport.put_record(scope, f"{index:04d}", f"record {index}".encode(), TTL_S)
    await transport.put_record(other, "9999", b"elsewhere", TTL_S)
    reader = await make_transport()

    assert await reader.recent_records(scope, 3) == [b"record 4", b"record 3", b"record 2"]
    assert len(await reader.recent_records(scope, 100)) == 5
    assert await reader.recent_records(new_scope(), 10) == []


async def test_a_record_is_gone_after_its_own_ttl(
    transport: Transport, make_transport: TransportFactory
) -> None:
    writer = transport
    scope = new_scope()
    await writer.put_record(scope, "0000", b"long-lived", TTL_S)
    await writer.put_record(scope, "0001", b"short-lived", 1.0)
    assert await writer.get_record(scope, "0001") == b"short-lived"

    async with asyncio.timeout(15):
        while await writer.get_record(scope, "0001") is not None:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    assert await writer.recent_records(scope, 10) == [b"long-lived"]
    assert await (await make_transport()).get_record(scope, "0000") == b"long-lived"


async def test_an_answer_keeps_its_record_sends_its_reply_and_finishes_the_work(
    transport: Transport, make_transport: TransportFactory
) -> None:
    """Many at once too: backends that batch commands must keep every caller's three."""
    scope = new_scope()
    queue, channel, group = f"{scope}-work", f"{scope}-replies", f"{scope}-group"
    bodies = [f"work {index:02d}".encode() for index in range(30)]
    await transport.declare(queue)
    for body in bodies:
        await transport.publish(queue, body)
    reader = await make_transport()
    try:
        async with (
            await transport.listen(channel) as listener,
            await transport.subscribe(queue, group, "m1") as member,
        ):
            answered = 0
            loop = asyncio.get_running_loop()
            deadline_s = loop.time() + 30.0
            while answered < len(bodies) and loop.time() < deadline_s:
                deliveries = await member.fetch(len(bodies) - answered, 0.5)
                await asyncio.gather(
                    *(
                        transport.record_reply_and_ack(
                            d,
                            Record(scope, d.body.decode()[-2:], b"done: " + d.body, TTL_S),
                            channel,
                        )
                        for d in deliveries
                    )
                )
                answered += len(deliveries)
            assert answered == len(bodies)
            replies = set()
            while len(replies) < len(bodies):
                reply = await listener.receive(5.0)
                assert reply is not None, f"only {len(replies)} of {len(bodies)} replies came"
                replies.add(reply)
            assert replies == {b"done: " + body for body in bodies}
            assert await member.fetch(1, 0.5) == [], "acked work is not redelivered"
        for body in bodies:
            key = body.decode()[-2:]
            assert await reader.get_record(scope, key) == b"done: " + body
        # No channel: the record and the ack alone.
        await transport.publish(queue, b"quiet")
        async with await transport.subscribe(queue, group, "m2") as member:
            deliveries = []
            while not deliveries and loop.time() < deadline_s:
                deliveries = await member.fetch(1, 0.5)
            await transport.record_reply_and_ack(deliveries[0], Record(scope, "zz", b"q", TTL_S))
            assert await member.fetch(1, 0.5) == []
        assert await reader.get_record(scope, "zz") == b"q"
    finally:
        await transport.delete(queue)
