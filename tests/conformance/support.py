"""Helpers for the contract suite: collect deliveries without sleeping, share work out.

Collection loops stop the moment they have what they need; the deadlines only bound a
failure, so a fast backend finishes fast and a rebalancing one still gets its seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from transports.base import Delivery, Subscription

COLLECT_TIMEOUT_S = 15.0
POLL_S = 0.5


async def fetch_n(
    subscription: Subscription, count: int, timeout_s: float = COLLECT_TIMEOUT_S
) -> list[Delivery]:
    """Exactly up to ``count`` deliveries (never more), or fewer if ``timeout_s`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    got: list[Delivery] = []
    while len(got) < count:
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        got.extend(await subscription.fetch(count - len(got), min(POLL_S, remaining)))
    return got


async def drain(
    members: Sequence[Subscription], expected: set[bytes], timeout_s: float = COLLECT_TIMEOUT_S
) -> list[list[bytes]]:
    """Let ``members`` consume concurrently, acking at once, until every body in
    ``expected`` has been acked by someone; returns the bodies each member acked."""
    received: list[list[bytes]] = [[] for _ in members]
    done = asyncio.Event()

    async def consume(index: int, member: Subscription) -> None:
        while not done.is_set():
            for delivery in await member.fetch(5, POLL_S):
                await delivery.ack()
                received[index].append(delivery.body)
            if expected <= {body for bodies in received for body in bodies}:
                done.set()

    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(consume(i, m) for i, m in enumerate(members)))
    except TimeoutError:
        pass  # the caller's completeness assertion says what was missing
    return received


async def settle(members: Sequence[Subscription], duration_s: float) -> None:
    """Give a rebalancing group time to agree on its members before work is published.

    There is nothing to await for "the group is stable", so members poll an empty queue
    for ``duration_s``; without this, a rebalance mid-test legitimately redelivers work.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + duration_s

    async def poll(member: Subscription) -> None:
        while (remaining := deadline - loop.time()) > 0:
            assert await member.fetch(1, min(POLL_S, remaining)) == []

    await asyncio.gather(*(poll(m) for m in members))
