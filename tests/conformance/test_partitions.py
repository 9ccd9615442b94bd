"""Consumer limits: partitions cap the members that can work; other transports have none."""

from __future__ import annotations

import pytest
from brokers import TransportFactory

from transports.base import Transport

from .support import drain, fetch_n

GROUP = "workers"


@pytest.mark.requires(partitioned=True)
async def test_resize_grows_partitions_and_new_ones_are_consumed(
    transport: Transport, make_transport: TransportFactory, queue: str
) -> None:
    await transport.declare(queue, partitions=1)
    assert await transport.max_consumers(queue) == 1

    async with await transport.subscribe(queue, GROUP, "old") as old:
        assert await old.fetch(1, 1.0) == []
        assert await transport.resize(queue, 3) == 3
        assert await transport.max_consumers(queue) == 3
        assert await transport.resize(queue, 2) == 3, "resize must never shrink"
        assert await transport.max_consumers(queue) == 3

        expected = {f"key-{i}".encode() for i in range(30)}
        for body in sorted(expected):
            await transport.publish(queue, body, key=body.decode())
        other = await make_transport()
        async with await other.subscribe(queue, GROUP, "new") as new:
            received = await drain([old, new], expected)

    # A rebalance may legitimately redeliver, so only completeness is required here.
    everything = {body for bodies in received for body in bodies}
    assert everything == expected, f"missing: {sorted(expected - everything)}"


@pytest.mark.requires(partitioned=False)
async def test_unpartitioned_queue_lets_every_member_work(transport: Transport, queue: str) -> None:
    await transport.declare(queue)
    assert await transport.max_consumers(queue) is None

    members = [await transport.subscribe(queue, GROUP, f"m{i}") for i in range(6)]
    try:
        for i in range(len(members)):
            await transport.publish(queue, f"job-{i}".encode())
        held = [await fetch_n(member, 1) for member in members]
        assert all(len(deliveries) == 1 for deliveries in held)
        assert len({d[0].body for d in held}) == len(members)
        for deliveries in held:
            await deliveries[0].ack()
    finally:
        for member in members:
            await member.close()
