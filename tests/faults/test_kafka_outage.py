"""A single Kafka broker killed and restarted under one transport, without the bench.

While the broker is dead every publish is refused, keyed or not, and none of them is
written later (they were never buffered); once it is back the same transport publishes
again, and a member gets the messages from before and after the outage.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
from conformance.support import fetch_n

from broker_sched.bench.chaos import BrokerNode
from broker_sched.config import load_settings
from broker_sched.errors import BrokerUnavailable
from transports.kafka import KafkaTransport

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(150)]

SCRIPT = Path(__file__).parents[2] / "compose" / "native" / "brokers.sh"
REFUSED_WITHIN_S = 2.5
"""Generous for a loaded machine; without the check a publish waited out its 10 s."""
BACK_WITHIN_S = 60.0


async def gone(pid: int) -> None:
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        await asyncio.sleep(0.05)


async def publish_until_accepted(transport: KafkaTransport, topic: str, body: bytes) -> None:
    deadline = time.monotonic() + BACK_WITHIN_S
    while True:
        try:
            await transport.publish(topic, body)
            return
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def test_an_outage_refuses_publishes_and_a_restart_resumes_them(
    fault_configs: Path,
) -> None:
    node = BrokerNode.from_env("kafka", SCRIPT)
    transport = KafkaTransport.from_settings(
        load_settings(fault_configs / "single.toml", transport="kafka")
    )
    topic = f"outage-{uuid.uuid4().hex[:12]}"
    try:
        await transport.declare(topic, 4)
        await transport.publish(topic, b"before")
        pid = node.pid()
        os.kill(pid, signal.SIGKILL)
        await asyncio.wait_for(gone(pid), 30)
        await asyncio.sleep(1.0)  # the client has seen its connections close
        for n in range(6):
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable, match="refused"):
                await transport.publish(topic, b"during-%d" % n, key=None if n % 2 else f"k{n}")
            assert time.monotonic() - started < REFUSED_WITHIN_S
        await node.restart()
        await publish_until_accepted(transport, topic, b"after")
        async with await transport.subscribe(topic, "outage-group", "m1") as member:
            got = await fetch_n(member, 2, timeout_s=BACK_WITHIN_S)
            got += await member.fetch(10, 2.0)  # anything written from the outage
        assert sorted(d.body for d in got) == [b"after", b"before"]
    finally:
        await transport.close()
