"""Memory-specific behaviour the contract suite cannot reach: ack_wait, faults, sharing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from broker_sched.config import load_settings
from broker_sched.errors import BrokerUnavailable
from transports.memory import MemoryBroker, MemoryTransport

QUEUE = "guest-echo"
GROUP = "workers"


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


async def test_unacked_work_is_redelivered_after_ack_wait(broker: MemoryBroker) -> None:
    async with MemoryTransport(broker, ack_wait_s=0.2) as transport:
        await transport.publish(QUEUE, b"job")
        stalled = await transport.subscribe(QUEUE, GROUP, "stalled")
        [first] = await stalled.fetch(1, 1.0)

        helper = await transport.subscribe(QUEUE, GROUP, "helper")
        [again] = await helper.fetch(1, 5.0)
        assert (again.body, again.attempt) == (b"job", 2)

        await first.ack()
        backlog = await transport.backlog(QUEUE, GROUP)
        assert backlog.in_flight == 1, "a late ack from the stalled member must be ignored"
        await again.ack()
        assert (await transport.backlog(QUEUE, GROUP)).total == 0


async def test_in_progress_pushes_the_redelivery_deadline_back(broker: MemoryBroker) -> None:
    ack_wait_s = 1.0
    async with MemoryTransport(broker, ack_wait_s=ack_wait_s) as transport:
        await transport.publish(QUEUE, b"long run")
        worker = await transport.subscribe(QUEUE, GROUP, "worker")
        watcher = await transport.subscribe(QUEUE, GROUP, "watcher")
        [delivery] = await worker.fetch(1, 1.0)

        for _ in range(3):  # 3 x 0.4 s > ack_wait_s, kept alive by in_progress
            assert await watcher.fetch(1, 0.4) == []
            await delivery.in_progress()

        await delivery.ack()
        assert (await transport.backlog(QUEUE, GROUP)).total == 0


async def test_closing_the_transport_gives_back_in_flight_work(broker: MemoryBroker) -> None:
    async with MemoryTransport(broker) as first:
        await first.publish(QUEUE, b"job")
        member = await first.subscribe(QUEUE, GROUP, "m1")
        assert len(await member.fetch(1, 1.0)) == 1

    async with MemoryTransport(broker) as second:
        backlog = await second.backlog(QUEUE, GROUP)
        assert (backlog.pending, backlog.in_flight) == (1, 0)


async def test_broker_down_makes_every_call_unavailable(broker: MemoryBroker) -> None:
    async with MemoryTransport(broker) as transport:
        member = await transport.subscribe(QUEUE, GROUP, "m1")
        listener = await transport.listen("replies")
        broker.down = True
        calls: list[Callable[[], Awaitable[object]]] = [
            transport.ping,
            lambda: transport.declare(QUEUE),
            lambda: transport.publish(QUEUE, b"x"),
            lambda: transport.subscribe(QUEUE, GROUP, "m2"),
            lambda: transport.backlog(QUEUE, GROUP),
            lambda: transport.send("replies", b"x"),
            lambda: transport.listen("replies"),
            lambda: member.fetch(1, 0.1),
            lambda: listener.receive(0.1),
        ]
        for call in calls:
            with pytest.raises(BrokerUnavailable, match="fault injected"):
                await call()

        broker.down = False
        await transport.publish(QUEUE, b"back")
        [delivery] = await member.fetch(1, 1.0)
        assert delivery.body == b"back"
        await delivery.ack()
        await listener.close()


async def test_on_publish_handler_fails_chosen_publishes(broker: MemoryBroker) -> None:
    def refuse_poison(queue: str, body: bytes) -> None:
        if body.startswith(b"poison"):
            raise BrokerUnavailable(f"refused publish to {queue}")

    broker.on_publish = refuse_poison
    async with MemoryTransport(broker) as transport:
        with pytest.raises(BrokerUnavailable, match="refused publish"):
            await transport.publish(QUEUE, b"poison pill")
        await transport.publish(QUEUE, b"fine")

        backlog = await transport.backlog(QUEUE, GROUP)
        assert backlog.pending == 1


async def test_clients_on_one_broker_see_each_other(broker: MemoryBroker) -> None:
    async with MemoryTransport(broker) as controller, MemoryTransport(broker) as invoker:
        await controller.publish(QUEUE, b"work")
        member = await invoker.subscribe(QUEUE, GROUP, "m1")
        [delivery] = await member.fetch(1, 1.0)
        assert delivery.body == b"work"
        await delivery.ack()
        assert (await controller.backlog(QUEUE, GROUP)).total == 0

        async with await controller.listen("replies") as listener:
            await invoker.send("replies", b"done")
            assert await listener.receive(1.0) == b"done"


async def test_separate_brokers_are_isolated() -> None:
    async with MemoryTransport() as one, MemoryTransport() as other:
        await one.publish(QUEUE, b"mine")
        assert (await other.backlog(QUEUE, GROUP)).pending == 0
        assert (await one.backlog(QUEUE, GROUP)).pending == 1


def test_from_settings_uses_memory_section_and_payload_limit() -> None:
    settings = load_settings(memory={"ack_wait_s": 4.5}, max_payload_bytes=2048)
    transport = MemoryTransport.from_settings(settings)
    assert transport.ack_wait_s == 4.5
    assert transport.max_message_bytes == 2048


async def test_records_beyond_max_records_drop_the_oldest(broker: MemoryBroker) -> None:
    async with MemoryTransport(broker, max_records=3) as transport:
        for key in ("a1", "a2", "a3", "a4"):
            await transport.put_record("guest", key, key.encode(), 60.0)
        await transport.put_record("other", "b1", b"b1", 60.0)
        assert await transport.recent_records("guest", 10) == [b"a4", b"a3", b"a2"]
        assert await transport.get_record("guest", "a1") is None
        assert await transport.get_record("other", "b1") == b"b1"


def test_max_records_is_read_from_the_memory_section() -> None:
    settings = load_settings(memory={"max_records": 7})
    assert MemoryTransport.from_settings(settings).max_records == 7
