"""Share groups against a real broker: what the contract suite cannot see (delivery
counts, poison messages)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest
from brokers import settings_for

from transports.base import dead_letter_queue
from transports.kafka_share import KafkaShareTransport

pytestmark = pytest.mark.broker
GROUP = "workers"
COLLECT_TIMEOUT_S = 20.0


@pytest.fixture
async def share(kafka_bootstrap: str) -> AsyncIterator[KafkaShareTransport]:
    settings = settings_for("kafka-share", kafka_bootstrap, kafka={"share_delivery_limit": 2})
    async with KafkaShareTransport.from_settings(settings) as transport:
        yield transport


@pytest.fixture
async def topic(share: KafkaShareTransport) -> AsyncIterator[str]:
    name = f"ks-{uuid.uuid4().hex[:12]}"
    yield name
    await share.delete(dead_letter_queue(name))
    await share.delete(name)


async def test_a_message_nacked_past_the_delivery_limit_is_dead_lettered_and_rejected(
    share: KafkaShareTransport, topic: str
) -> None:
    await share.declare(topic)
    await share.publish(topic, b"poison")
    async with await share.subscribe(topic, GROUP, "m1") as member:
        attempts = []
        for _ in range(2):
            [delivery] = await member.fetch(1, COLLECT_TIMEOUT_S)
            attempts.append(delivery.attempt)
            await delivery.nack()
        assert attempts == [1, 2]
        assert await member.fetch(1, 3.0) == []
    assert (await share.backlog(topic, GROUP)).total == 0
    async with await share.subscribe(dead_letter_queue(topic), "inspect", "m1") as dlq:
        [parked] = await dlq.fetch(1, COLLECT_TIMEOUT_S)
        await parked.ack()
    envelope = json.loads(parked.body)
    assert envelope["queue"] == topic
    assert "delivered 3 times" in envelope["reason"]
