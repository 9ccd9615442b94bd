"""A cancellation that a client swallowed still ends a fetch, a receive and their loops.

The fakes do what Python 3.11's ``asyncio.wait_for`` does inside some broker clients:
catch the cancellation that lands as their call finishes and return a result as if
nothing happened — once, as the race does. Nothing in the fetch or receive checks for
it: the loops run in a cancel scope, whose cancellation anyio delivers again at the
next await, which is what these tests rely on.
"""

from __future__ import annotations

import asyncio
import contextlib

import anyio
import pytest

from transports.base import Delivery, Listener, Subscription

CANCEL_WITHIN_S = 2.0


class Taken(Delivery):
    def __init__(self, body: bytes) -> None:
        self.body, self.id, self.attempt = body, body.decode(), 1
        self.nacked = False

    async def ack(self) -> None:
        raise AssertionError("a delivery taken during a cancelled fetch is not acked")

    async def nack(self, delay_s: float = 0.0) -> None:
        await anyio.lowlevel.checkpoint()
        self.nacked = True


class SwallowOnce:
    """Waits ``timeout_s`` and returns; the first cancellation is swallowed."""

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.swallowed = False
        self.calls = 0

    async def wait(self, timeout_s: float) -> None:
        self.calls += 1
        self.entered.set()
        if self.swallowed:
            await anyio.sleep(timeout_s)
            return
        with contextlib.suppress(anyio.get_cancelled_exc_class()):
            await anyio.sleep(timeout_s)
            return
        self.swallowed = True


class SwallowingSubscription(Subscription):
    queue = group = member = "q"

    def __init__(self) -> None:
        self.taken: list[Taken] = []
        self.client = SwallowOnce()

    async def _fetch(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        await self.client.wait(timeout_s)
        taken = [Taken(b"a"), Taken(b"b")]
        self.taken += taken
        return list(taken)

    async def close(self) -> None:
        pass


class SwallowingListener(Listener):
    channel = "c"

    def __init__(self) -> None:
        self.client = SwallowOnce()

    async def _receive(self, timeout_s: float) -> bytes | None:
        await self.client.wait(timeout_s)
        return b"reply"

    async def close(self) -> None:
        pass


async def test_a_swallowed_cancellation_still_ends_a_fetch_and_gives_work_back() -> None:
    subscription = SwallowingSubscription()
    returned: list[list[Delivery]] = []

    async def fetch() -> None:
        returned.append(await subscription.fetch(2, 10.0))

    with anyio.fail_after(CANCEL_WITHIN_S):
        async with anyio.create_task_group() as group:
            group.start_soon(fetch)
            await subscription.client.entered.wait()
            group.cancel_scope.cancel()

    assert subscription.client.swallowed
    assert returned == []
    assert subscription.taken
    assert all(delivery.nacked for delivery in subscription.taken)


async def test_a_swallowed_cancellation_still_ends_a_receive_loop() -> None:
    listener = SwallowingListener()
    received: list[bytes | None] = []

    async def listen() -> None:
        while True:
            received.append(await listener.receive(10.0))

    with anyio.fail_after(CANCEL_WITHIN_S):
        async with anyio.create_task_group() as group:
            group.start_soon(listen)
            await listener.client.entered.wait()
            group.cancel_scope.cancel()

    assert listener.client.swallowed
    assert received == [b"reply"], "the swallowed receive returns; the next one raises"


async def test_a_fetch_that_was_not_cancelled_returns_what_it_took() -> None:
    subscription = SwallowingSubscription()

    assert [d.body for d in await subscription.fetch(2, 0.01)] == [b"a", b"b"]
    assert not any(delivery.nacked for delivery in subscription.taken)


async def test_a_cancellation_already_handled_before_the_fetch_does_not_count() -> None:
    """A scope that was cancelled and left (a timeout) leaves the next fetch alone."""
    subscription = SwallowingSubscription()
    with anyio.move_on_after(0.01):
        await anyio.sleep(1)

    assert len(await subscription.fetch(2, 0.01)) == 2


async def test_a_cancellation_swallowed_earlier_in_the_loop_stops_the_next_fetch() -> None:
    """Swallowed during, say, an ack: the loop's next fetch raises and takes nothing."""
    subscription = SwallowingSubscription()
    acking = anyio.Event()
    fetched: list[int] = []

    async def loop() -> None:
        while True:
            with contextlib.suppress(anyio.get_cancelled_exc_class()):
                acking.set()
                await anyio.sleep(10)
            fetched.append(len(await subscription.fetch(2, 0.01)))

    with anyio.fail_after(CANCEL_WITHIN_S):
        async with anyio.create_task_group() as group:
            group.start_soon(loop)
            await acking.wait()
            group.cancel_scope.cancel()

    assert fetched == []
    assert all(delivery.nacked for delivery in subscription.taken)


@pytest.mark.parametrize("swallow_in", ["fetch", "receive"])
async def test_a_bare_task_cancel_outside_a_scope_is_not_redelivered(swallow_in: str) -> None:
    """Why the scheduler runs its loops in task groups: a bare ``Task.cancel()`` is
    delivered once, so a swallowed one is lost and the call returns as if uncancelled."""
    subscription, listener = SwallowingSubscription(), SwallowingListener()
    call = subscription.fetch(2, 10.0) if swallow_in == "fetch" else listener.receive(10.0)
    task = asyncio.get_running_loop().create_task(call)
    client = subscription.client if swallow_in == "fetch" else listener.client
    await client.entered.wait()
    task.cancel()

    assert await task
