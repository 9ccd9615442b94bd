"""Leases: which deliveries are renewed, and how often."""

from __future__ import annotations

import anyio

from broker_sched.invoker.leases import Leases, renew_interval_s
from transports.memory import MemoryBroker, MemoryTransport


def test_renewal_follows_the_heartbeat_unless_the_window_needs_it_sooner() -> None:
    assert renew_interval_s(1.0, None) == 1.0
    assert renew_interval_s(1.0, 30.0) == 1.0
    assert renew_interval_s(2.0, 3.0) == 1.0


async def test_only_deliveries_held_for_half_an_interval_are_due() -> None:
    async with MemoryTransport(MemoryBroker(), ack_wait_s=5.0) as transport:
        await transport.publish("q", b"x")
        member = await transport.subscribe("q", "g", "m")
        [delivery] = await member.fetch(1, 1.0)
        leases = Leases(1.0)
        with leases.held(delivery):
            assert len(leases) == 1
            [(_, since_s)] = leases._held.items()
            assert leases.due(since_s + 0.4) == []
            assert leases.due(since_s + 0.5) == [delivery]
        assert len(leases) == 0
        await delivery.ack()


async def test_a_held_delivery_outlives_its_window_and_a_released_one_does_not() -> None:
    async with MemoryTransport(MemoryBroker(), ack_wait_s=0.6) as transport:
        for body in (b"held", b"dropped"):
            await transport.publish("q", body)
        member = await transport.subscribe("q", "g", "m")
        held, dropped = await member.fetch(2, 1.0)
        leases = Leases(renew_interval_s(1.0, transport.redelivery_window_s))
        async with anyio.create_task_group() as renewing:
            renewing.start_soon(leases.run)
            with leases.held(held):
                redelivered = await member.fetch(2, 1.8)
            renewing.cancel_scope.cancel()
        assert [d.body for d in redelivered] == [dropped.body]
        assert leases.renewed >= 2
        await held.ack()
