"""`broker-sched doctor`: is the configured transport usable, and if not, why.

It goes through what a deployment needs, in the order a failure would show up —
client installed, broker reachable, queue creation allowed, a message round trip —
and prints one line per check, so the first failing line names the problem.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from broker_sched.config import Settings
from broker_sched.errors import BrokerSchedError
from broker_sched.model import new_id
from broker_sched.topology import consumer_group
from transports.base import Transport
from transports.registry import transport_from_settings


async def doctor(settings: Settings, out: TextIO = sys.stdout) -> int:
    """Print a line per check; returns 0 if every check passed, else 1."""
    try:
        transport = transport_from_settings(settings)
    except BrokerSchedError as exc:
        print(f"FAIL transport {settings.transport!r}: {exc}", file=out)
        return 1
    try:
        async with transport:
            version = await transport.ping()
            print(f"ok   reachable: {version}", file=out)
            await _round_trip(transport, out)
    except BrokerSchedError as exc:
        print(f"FAIL {settings.transport}: {exc}", file=out)
        return 1
    return 0


async def _round_trip(transport: Transport, out: TextIO) -> None:
    queue = f"bs-doctor-{new_id()}"
    await transport.declare(queue)
    print(f"ok   may create queues ({queue})", file=out)
    try:
        started = time.monotonic()
        await transport.publish(queue, b"doctor")
        async with await transport.subscribe(
            queue, consumer_group(queue), "doctor"
        ) as subscription:
            deliveries = await subscription.fetch(1, 10.0)
            if not deliveries or deliveries[0].body != b"doctor":
                raise BrokerSchedError("published a probe message but could not fetch it back")
            await deliveries[0].ack()
        took_ms = (time.monotonic() - started) * 1000
        print(f"ok   publish → fetch → ack round trip in {took_ms:.0f} ms", file=out)
    finally:
        await transport.delete(queue)
