"""The invoker's feed: one member shared by its containers, fetching only what they can
take, on the in-memory broker."""

from __future__ import annotations

import anyio

from broker_sched.invoker.feed import ActionFeed
from transports.base import Delivery, Subscription
from transports.memory import MemoryBroker, MemoryTransport


async def test_containers_share_one_member_and_it_fetches_only_their_free_capacity() -> None:
    async with MemoryTransport(MemoryBroker(), ack_wait_s=30.0) as transport:
        for index in range(10):
            await transport.publish("q", f"m{index}".encode())
        emptied: list[bool] = []
        feed = ActionFeed(
            await transport.subscribe("q", "g", "inv"), "feed", lambda: emptied.append(True)
        )
        containers = [feed.join() for _ in range(3)]
        got: list[Delivery] = []

        async def one(member: Subscription) -> None:
            got.extend(await member.fetch(1, 1.0))

        async with anyio.create_task_group() as fetching:
            for container in containers:
                fetching.start_soon(one, container)
        assert len(got) == 3
        backlog = await transport.backlog("q", "g")
        assert (backlog.pending, backlog.in_flight) == (7, 3)
        for delivery in got:
            await delivery.ack()
        for container in containers[:2]:
            await container.close()
        assert emptied == []
        rest = await containers[2].fetch(10, 1.0)
        assert sorted(d.body for d in rest) == [f"m{i}".encode() for i in range(3, 10)]
        await containers[2].close()
        assert emptied == [True]
        backlog = await transport.backlog("q", "g")
        assert (backlog.pending, backlog.in_flight) == (7, 0)


async def test_a_container_that_gives_up_waiting_gets_nothing_and_loses_nothing() -> None:
    async with MemoryTransport(MemoryBroker(), ack_wait_s=30.0) as transport:
        feed = ActionFeed(await transport.subscribe("q", "g", "inv"), "feed", lambda: None)
        container = feed.join()
        assert await container.fetch(1, 0.2) == []
        with anyio.move_on_after(0.2):
            await container.fetch(1, 5.0)
        await transport.publish("q", b"later")
        [delivery] = await container.fetch(1, 1.0)
        assert delivery.body == b"later"
        await delivery.ack()
        await container.close()
