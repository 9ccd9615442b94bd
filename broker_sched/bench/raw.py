"""The floor: the transport alone, with no scheduler in the way.

``users`` closed-loop users each publish a message to one queue and wait for its reply;
``consumers`` members of the queue's group fetch it, "run" it (sleep ``run_ms``, the same
run the scheduler's cells use), send the reply on a channel and ack — the same
publish → fetch → reply → ack path a container proxy takes, minus the scheduler's own
work (validation, the backlog monitor, container management). With one consumer per
user nothing queues for a free consumer: that is the floor.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from broker_sched.bench.consumers import settled_pool
from broker_sched.bench.load import closed_loop, stop_tasks
from broker_sched.bench.progress import Progress
from broker_sched.bench.recorder import Recorder, Summary, inline_summary
from broker_sched.bench.settings import run_tag
from broker_sched.config import Settings
from broker_sched.errors import BrokerUnavailable
from transports.base import Listener, Transport
from transports.registry import transport_from_settings

PADDING = b"x" * 240
"""About the size of an encoded activation, so raw messages cost what real ones do."""
REPLY_TIMEOUT_S = 10.0
GRACE_S = 2.0


@dataclass(frozen=True, slots=True)
class FloorResult:
    """What the transport alone sustained: the floor under the scheduler's numbers."""

    transport: str
    broker: str
    """The broker as its transport describes it (version, address)."""
    users: int
    consumers: int
    run_ms: float
    warmup_s: float
    duration_s: float
    summary: Summary
    """The recorder's, less its overhead: with no scheduler in the way and no run time
    subtracted, that would only be the latency again."""
    series: dict[str, list[Any]]

    def to_json(self) -> dict[str, Any]:
        """As in ``results.json``: the run's setup, then its summary inline, then the series."""
        return inline_summary(self)


async def run_raw(
    settings: Settings,
    *,
    users: int,
    consumers: int,
    run_ms: float,
    warmup_s: float,
    duration_s: float,
    interval_s: float,
    progress: Progress,
) -> FloorResult:
    tag = run_tag()
    queue = f"bench-{tag}-raw"
    channel = f"bench-{tag}-raw-replies"
    transport = transport_from_settings(settings)
    recorder = Recorder(warmup_s, duration_s, interval_s)
    requests = _Requests(transport, queue, recorder)

    async def reply(body: bytes) -> None:
        await transport.send(channel, body.split(b"\n", 1)[0])

    async with transport:
        broker = await transport.ping()
        listener = await transport.listen(channel)
        dispatcher = asyncio.create_task(requests.dispatch(listener))
        try:
            async with settled_pool(
                transport,
                queue,
                partitions=consumers,
                consumers=consumers,
                run_ms=run_ms,
                handle=reply,
                recorder=recorder,
            ):
                label = f"{settings.transport} raw {users} users {consumers} consumers"
                async with progress.showing(label, recorder):
                    await closed_loop(
                        users,
                        requests.send,
                        until=lambda: recorder.t0_s + recorder.window_end_s,
                        grace_s=GRACE_S,
                    )
                recorder.finish()
        finally:
            await stop_tasks([dispatcher], grace_s=0.0)
            await listener.close()
    return FloorResult(
        transport=settings.transport,
        broker=broker,
        users=users,
        consumers=consumers,
        run_ms=run_ms,
        warmup_s=warmup_s,
        duration_s=duration_s,
        summary=replace(recorder.summary(), overhead_ms=None, overhead_p99_by_action_ms=None),
        series=recorder.series(),
    )


class _Requests:
    """The users' requests, each done when its id comes back on the reply channel."""

    def __init__(self, transport: Transport, queue: str, recorder: Recorder) -> None:
        self.transport = transport
        self.queue = queue
        self.recorder = recorder
        self.waiting: dict[bytes, asyncio.Future[None]] = {}

    async def send(self, user: int) -> None:
        message_id = uuid.uuid4().hex.encode()
        done = self.waiting[message_id] = asyncio.get_running_loop().create_future()
        sent_s = time.monotonic()
        try:
            await self.transport.publish(self.queue, message_id + b"\n" + PADDING, key=None)
            await asyncio.wait_for(done, REPLY_TIMEOUT_S)
        except TimeoutError:
            self.recorder.fail("timeout")
            return
        except BrokerUnavailable:
            self.recorder.fail("broker_unavailable")
            return
        finally:
            self.waiting.pop(message_id, None)
        self.recorder.record((time.monotonic() - sent_s) * 1000)

    async def dispatch(self, listener: Listener) -> None:
        while True:
            message_id = await listener.receive(1.0)
            if message_id is None:
                continue
            done = self.waiting.get(message_id)
            if done is not None and not done.done():
                done.set_result(None)
