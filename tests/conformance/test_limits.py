"""What a queue refuses or parks: oversize payloads and malformed messages."""

from __future__ import annotations

import base64
import json

import pytest

from broker_sched.errors import MalformedMessage, PayloadTooLarge
from broker_sched.model import Activation, decode
from transports.base import Transport, dead_letter_queue

from .support import fetch_n

GROUP = "workers"


async def test_payload_at_the_limit_is_delivered_and_one_byte_more_is_refused(
    transport: Transport, queue: str
) -> None:
    limit = transport.max_message_bytes
    await transport.declare(queue)

    with pytest.raises(PayloadTooLarge) as refused:
        await transport.publish(queue, b"x" * (limit + 1))
    assert f"{limit + 1} bytes" in str(refused.value)
    assert f"limit of {limit} bytes" in str(refused.value)
    backlog = await transport.backlog(queue, GROUP)
    assert (backlog.pending, backlog.in_flight) == (0, 0)

    body = bytes(i % 251 for i in range(limit))
    await transport.publish(queue, body)
    async with await transport.subscribe(queue, GROUP, "m1") as member:
        [delivery] = await fetch_n(member, 1)
        assert len(delivery.body) == limit
        assert delivery.body == body
        await delivery.ack()


async def test_malformed_message_is_dead_lettered_with_reason_and_bytes(
    transport: Transport, queue: str
) -> None:
    garbage = b"\x00\xfenot json{"
    await transport.declare(queue)
    await transport.publish(queue, garbage)

    async with await transport.subscribe(queue, GROUP, "m1") as member:
        [delivery] = await fetch_n(member, 1)
        with pytest.raises(MalformedMessage) as malformed:
            decode(Activation, delivery.body)
        reason = str(malformed.value)
        await transport.dead_letter(queue, delivery.body, reason)
        await delivery.ack()

    backlog = await transport.backlog(queue, GROUP)
    assert (backlog.pending, backlog.in_flight) == (0, 0)
    async with await transport.subscribe(dead_letter_queue(queue), "inspect", "m1") as dlq:
        [parked] = await fetch_n(dlq, 1)
        envelope = json.loads(parked.body)
        await parked.ack()
    assert envelope["queue"] == queue
    assert envelope["reason"] == reason
    assert base64.b64decode(envelope["body_b64"]) == garbage
