"""Activation records any controller can serve, kept in the deployment's own broker.

Records go through the transport's record contract (``put_record``: a Redis key with a
TTL, a NATS KV bucket, a compacted Kafka topic, or memory), scoped by namespace and
keyed by activation id, which sorts by time. So ``GET …/activations/{id}`` and the
listing work on every controller and across restarts, for ``invoker.record_ttl_s``,
and need no database beside the broker the deployment already runs and secures.

The invoker that answers an activation puts its record before it acks the work
(:func:`broker_sched.invoker.replies.answer`), so a record cannot be lost with the
reply. This class reads them, and writes the few records a controller makes itself (a
sequence's own) off the result path, in background tasks: a slow store delays no
caller, and a failed write is retried for about 16 s, then logged and costs only that
record.
"""

from __future__ import annotations

import asyncio
import logging

from broker_sched.errors import BrokerSchedError, MalformedMessage
from broker_sched.model import ActivationResult, decode, encode
from transports.base import Transport

log = logging.getLogger(__name__)

PUT_ATTEMPTS = 7
PUT_BACKOFF_S = 0.25
"""A write is retried with doubling waits, about 16 s in all: long enough to ride out a
broker restart or a cluster's leader elections, short enough that a store which is
really gone does not pile up writes."""


class ActivationRecords:
    def __init__(self, transport: Transport, ttl_s: float) -> None:
        self.transport = transport
        self.ttl_s = ttl_s
        self._writing: set[asyncio.Task[None]] = set()

    def keep(self, result: ActivationResult) -> None:
        task = asyncio.get_running_loop().create_task(self._put(result))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def _put(self, result: ActivationResult) -> None:
        body = encode(result)
        for attempt in range(1, PUT_ATTEMPTS + 1):
            try:
                await self.transport.put_record(
                    result.namespace, result.activation_id, body, self.ttl_s
                )
                return
            except BrokerSchedError as exc:
                if attempt == PUT_ATTEMPTS:
                    log.warning("activation record %s not kept: %s", result.activation_id, exc)
                    return
                await asyncio.sleep(PUT_BACKOFF_S * 2 ** (attempt - 1))

    async def get(self, namespace: str, activation_id: str) -> ActivationResult | None:
        body = await self.transport.get_record(namespace, activation_id)
        return self._decoded(body) if body is not None else None

    async def recent(self, namespace: str, limit: int) -> list[ActivationResult]:
        bodies = await self.transport.recent_records(namespace, limit)
        return [record for body in bodies if (record := self._decoded(body)) is not None]

    async def flush(self) -> None:
        """Wait for the writes under way (tests, shutdown)."""
        if self._writing:
            await asyncio.gather(*self._writing)

    @staticmethod
    def _decoded(body: bytes) -> ActivationResult | None:
        try:
            return decode(ActivationResult, body)
        except MalformedMessage as exc:
            log.warning("skipped an unreadable activation record: %s", exc)
            return None
