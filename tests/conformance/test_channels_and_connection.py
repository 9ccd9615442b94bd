"""Reply channels, and what a client does when the broker is there or not."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from brokers import TransportFactory

from broker_sched.errors import BrokerUnavailable
from transports.base import Transport

UNREACHABLE_WITHIN_S = 10.0


async def test_channel_delivers_what_is_sent_after_listen(
    transport: Transport, make_transport: TransportFactory
) -> None:
    channel = f"replies-{uuid.uuid4().hex[:12]}"
    sender = await make_transport()
    await sender.send(channel, b"before anyone listens")

    async with await transport.listen(channel) as listener:
        for body in (b"reply 1", "réponse ✓".encode()):
            await sender.send(channel, body)
            received = await listener.receive(5.0)
            while received == b"before anyone listens":
                received = await listener.receive(5.0)
            assert received == body
        assert await listener.receive(0.2) is None


async def test_ping_describes_the_broker(transport: Transport) -> None:
    description = await transport.ping()
    assert isinstance(description, str)
    assert description.strip()


async def connect_and_ping(transport: Transport) -> str:
    await transport.connect()
    return await transport.ping()


async def test_unreachable_broker_fails_fast(unreachable: Transport) -> None:
    try:
        with pytest.raises(BrokerUnavailable):
            await asyncio.wait_for(connect_and_ping(unreachable), UNREACHABLE_WITHIN_S)
    except TimeoutError:
        pytest.fail(f"no BrokerUnavailable within {UNREACHABLE_WITHIN_S} s")


async def test_a_deleted_channel_works_again_when_used(
    transport: Transport, make_transport: TransportFactory
) -> None:
    """Deleting a dead component's channel leaves nothing behind, and an id that comes
    back listens and sends on it as before."""
    channel = f"conf-gone-{uuid.uuid4().hex[:8]}"
    listener = await transport.listen(channel)
    await listener.close()
    await transport.delete_channel(channel)
    await transport.delete_channel(channel)  # missing is fine
    sender = await make_transport()
    listener = await transport.listen(channel)
    try:
        await sender.send(channel, b"back")
        assert await listener.receive(15.0) == b"back"
    finally:
        await listener.close()
