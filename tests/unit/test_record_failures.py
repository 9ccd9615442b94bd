"""A record the broker refuses to write is counted for the RecordsFailingToWrite alert,
and the error still reaches the proxy, which leaves the activation to be redelivered."""

from __future__ import annotations

import pytest

from broker_sched.errors import BrokerUnavailable
from broker_sched.invoker.replies import answer
from broker_sched.metrics import PROCESS
from broker_sched.model import Status, encoded_activation, now_ms
from transports.memory import MemoryBroker, MemoryTransport

FAILURES = "broker_sched_record_write_failures_total"


async def test_a_refused_record_is_counted_and_raised() -> None:
    broker = MemoryBroker()
    async with MemoryTransport(broker) as transport:
        activation, body = encoded_activation(
            "guest", "echo", {}, reply_to="", deadline_ms=now_ms() + 60_000
        )
        await transport.publish("q", body)
        subscription = await transport.subscribe("q", "g", "m")
        (delivery,) = await subscription.fetch(1, 5.0)

        await answer(
            transport, delivery, activation, Status.SUCCESS, invoker_id="i", record_ttl_s=60
        )
        written = PROCESS.get_sample_value(FAILURES)
        broker.down = True
        with pytest.raises(BrokerUnavailable):
            await answer(
                transport, delivery, activation, Status.SUCCESS, invoker_id="i", record_ttl_s=60
            )
        broker.down = False
        await subscription.close()

    assert PROCESS.get_sample_value(FAILURES) == (written or 0) + 1
