"""Records: small documents one client puts and any other reads, until they expire."""

from __future__ import annotations

import asyncio
import uuid

from brokers import TransportFactory

from transports.base import Transport

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
