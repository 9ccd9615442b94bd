"""Backlog counts: the scaling loop's only input, so they must be exact.

One group per queue, as in normal operation (the contract lets backends support more).
"""

from __future__ import annotations

from collections.abc import Callable

from transports.base import Backlog, Transport

from .support import fetch_n

GROUP = "workers"


def counts(backlog: Backlog) -> tuple[int, int]:
    return backlog.pending, backlog.in_flight


async def test_backlog_follows_publish_fetch_and_ack(transport: Transport, queue: str) -> None:
    await transport.declare(queue)
    for i in range(5):
        await transport.publish(queue, f"m{i}".encode())

    before = await transport.backlog(queue, GROUP)
    assert counts(before) == (5, 0)
    assert before.partitions >= 1
    assert before.oldest_age_s is None or before.oldest_age_s >= 0

    async with await transport.subscribe(queue, GROUP, "m1") as member:
        taken = await fetch_n(member, 2)
        assert len(taken) == 2
        assert counts(await transport.backlog(queue, GROUP)) == (3, 2)

        for delivery in taken:
            await delivery.ack()
        assert counts(await transport.backlog(queue, GROUP)) == (3, 0)


async def test_never_subscribed_group_counts_everything_pending(
    transport: Transport, queue: str
) -> None:
    await transport.declare(queue)
    assert counts(await transport.backlog(queue, GROUP)) == (0, 0)
    for i in range(3):
        await transport.publish(queue, f"m{i}".encode())

    assert counts(await transport.backlog(queue, GROUP)) == (3, 0)


async def test_backlogs_batch_equals_individual_calls(
    transport: Transport, make_queue: Callable[[], str]
) -> None:
    queues = [make_queue(), make_queue(), make_queue()]
    for count, name in enumerate(queues, start=1):
        await transport.declare(name)
        for i in range(count):
            await transport.publish(name, f"m{i}".encode())
    async with await transport.subscribe(queues[1], GROUP, "m1") as member:
        [delivery] = await fetch_n(member, 1)

        pairs = [(name, GROUP) for name in queues]
        batch = await transport.backlogs(pairs)
        single = [await transport.backlog(q, g) for q, g in pairs]
        await delivery.ack()

    assert [counts(b) for b in batch] == [counts(b) for b in single] == [(1, 0), (1, 1), (3, 0)]
    assert [b.partitions for b in batch] == [b.partitions for b in single]
