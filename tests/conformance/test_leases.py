"""Leases: a delivery its member keeps renewing is never handed to another member.

The invoker renews what it runs on the beat of its heartbeat
(:mod:`broker_sched.invoker.leases`); here the same :class:`Leases` keeps one delivery
for longer than the transport's redelivery window while a second member, on a client of
its own as another invoker would be, fetches all along. Where the transport cannot renew
(``capabilities.renews_deliveries`` false) the run stays inside its window, which such a
transport must make long, or has none (Kafka holds a partition while its member lives).
"""

from __future__ import annotations

import anyio
from brokers import TransportFactory

from broker_sched.invoker.leases import Leases, renew_interval_s
from transports.base import Delivery, Subscription, Transport

from .support import POLL_S, settle

GROUP = "workers"
HEARTBEAT_INTERVAL_S = 1.0
WINDOWS_OUTLIVED = 2.5
"""A renewed run lasts this many redelivery windows."""
UNRENEWED_RUN_S = 4.0
"""How long a run lasts on a transport that cannot renew (inside its window)."""
SETTLE_S = 3.0


def run_s(transport: Transport) -> float:
    window_s = transport.redelivery_window_s
    if transport.capabilities.renews_deliveries and window_s is not None:
        return WINDOWS_OUTLIVED * window_s
    assert window_s is None or window_s > UNRENEWED_RUN_S * 2, (
        f"{transport.name} cannot renew, so its window ({window_s} s) must hold a long run"
    )
    return UNRENEWED_RUN_S


async def test_a_renewed_run_longer_than_the_window_is_delivered_once(
    transport: Transport, make_transport: TransportFactory, queue: str
) -> None:
    other_side = await make_transport()
    duration_s = run_s(transport)
    await transport.declare(queue)
    leases = Leases(renew_interval_s(HEARTBEAT_INTERVAL_S, transport.redelivery_window_s))
    deliveries: list[tuple[str, Delivery]] = []
    finished = anyio.Event()

    async def member(name: str, subscription: Subscription) -> None:
        while not finished.is_set():
            for delivery in await subscription.fetch(1, POLL_S):
                deliveries.append((name, delivery))
                with leases.held(delivery):
                    await anyio.sleep(duration_s)
                    await delivery.ack()
                finished.set()

    async with (
        await transport.subscribe(queue, GROUP, "runner") as runner,
        await other_side.subscribe(queue, GROUP, "other") as other,
    ):
        if transport.capabilities.rebalances:
            await settle([runner, other], SETTLE_S)
        await transport.publish(queue, b"long run")
        with anyio.fail_after(duration_s + 60):
            async with anyio.create_task_group() as renewing:
                renewing.start_soon(leases.run)
                async with anyio.create_task_group() as members:
                    members.start_soon(member, "runner", runner)
                    members.start_soon(member, "other", other)
                renewing.cancel_scope.cancel()
            # Both keep fetching one more window (at most a few seconds) after the ack: a
            # redelivery that raced the ack would show up now.
            after_s = min(transport.redelivery_window_s or POLL_S, UNRENEWED_RUN_S)
            window_end_s = anyio.current_time() + after_s
            while anyio.current_time() < window_end_s:
                for name, subscription in (("runner", runner), ("other", other)):
                    for delivery in await subscription.fetch(1, POLL_S):
                        deliveries.append((name, delivery))
                        await delivery.ack()
    assert [d.body for _, d in deliveries] == [b"long run"], [
        (name, d.attempt) for name, d in deliveries
    ]
    assert deliveries[0][1].attempt == 1
    if transport.capabilities.renews_deliveries:
        assert leases.renewed >= 1
