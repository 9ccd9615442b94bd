"""Activation records any controller can serve, kept in the deployment's own broker.

The controller that receives a result puts its record through the transport's record
contract (``put_record``: a Redis key with a TTL, a NATS KV bucket, a compacted Kafka
topic, or memory), scoped by namespace and keyed by activation id, which sorts by time.
So ``GET …/activations/{id}`` and the listing work on every controller and across
restarts, for ``api.record_ttl_s``, and need no database beside the broker the
deployment already runs and secures.

Writes happen off the result path, in background tasks: a slow store delays no
blocking caller, and a failed write is logged and costs only that record.
"""

from __future__ import annotations

import asyncio
import logging

from broker_sched.errors import BrokerSchedError, MalformedMessage
from broker_sched.model import ActivationResult, decode, encode
from transports.base import Transport

log = logging.getLogger(__name__)


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
        try:
            await self.transport.put_record(
                result.namespace, result.activation_id, encode(result), self.ttl_s
            )
        except BrokerSchedError as exc:
            log.warning("activation record %s not kept: %s", result.activation_id, exc)

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
