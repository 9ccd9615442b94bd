"""A cancellation that a client swallowed still ends a fetch, a receive and their loops.

The fakes do what Python 3.11's ``asyncio.wait_for`` does inside some broker clients:
catch the cancellation and return a result as if nothing happened.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from transports.base import Delivery, Listener, Subscription


class Taken(Delivery):
    def __init__(self, body: bytes) -> None:
        self.body, self.id, self.attempt = body, body.decode(), 1
        self.nacked = False

    async def ack(self) -> None:
        raise AssertionError("a delivery taken during a cancelled fetch is not acked")

    async def nack(self, delay_s: float = 0.0) -> None:
        self.nacked = True


class SwallowingSubscription(Subscription):
    queue = group = member = "q"

    def __init__(self) -> None:
        self.taken = [Taken(b"a"), Taken(b"b")]
        self.entered = asyncio.Event()

    async def _fetch(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        self.entered.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(timeout_s)
        return list(self.taken)

    async def close(self) -> None:
        pass


class SwallowingListener(Listener):
    channel = "c"

    def __init__(self) -> None:
        self.entered = asyncio.Event()

    async def _receive(self, timeout_s: float) -> bytes | None:
        self.entered.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(timeout_s)
        return b"reply"

    async def close(self) -> None:
        pass


async def test_a_swallowed_cancellation_still_ends_a_fetch_and_gives_work_back() -> None:
    subscription = SwallowingSubscription()
    fetch = asyncio.create_task(subscription.fetch(2, 10.0))
    await subscription.entered.wait()
    fetch.cancel()

    with pytest.raises(asyncio.CancelledError):
        await fetch
    assert all(delivery.nacked for delivery in subscription.taken)


async def test_a_swallowed_cancellation_still_ends_a_receive() -> None:
    listener = SwallowingListener()
    receive = asyncio.create_task(listener.receive(10.0))
    await listener.entered.wait()
    receive.cancel()

    with pytest.raises(asyncio.CancelledError):
        await receive


async def test_a_fetch_that_was_not_cancelled_returns_what_it_took() -> None:
    subscription = SwallowingSubscription()

    assert [d.body for d in await subscription.fetch(2, 0.01)] == [b"a", b"b"]
    assert not any(delivery.nacked for delivery in subscription.taken)


async def test_a_cancellation_already_handled_before_the_fetch_does_not_count() -> None:
    """A task that was cancelled and handled it (asyncio.timeout does) fetches as usual."""
    subscription = SwallowingSubscription()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)

    assert len(await subscription.fetch(2, 0.01)) == 2


async def test_a_cancellation_swallowed_earlier_in_the_loop_stops_the_next_fetch() -> None:
    """Swallowed during, say, an ack: the loop's next fetch stops it without fetching."""
    subscription = SwallowingSubscription()
    acking = asyncio.Event()
    fetched: list[int] = []

    async def loop() -> None:
        while True:
            with contextlib.suppress(asyncio.CancelledError):
                acking.set()
                await asyncio.sleep(10)
            fetched.append(len(await subscription.fetch(2, 0.01)))

    task = asyncio.create_task(loop())
    await acking.wait()
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert fetched == []
    assert not subscription.entered.is_set()
