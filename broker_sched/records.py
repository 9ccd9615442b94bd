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
from typing import Any

from pydantic import JsonValue

from broker_sched.errors import BrokerSchedError, MalformedMessage
from broker_sched.model import Action, ActivationResult, Start, Status, decode, encode
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


OPENWHISK_STATUS: dict[Status, tuple[int, str]] = {
    Status.SUCCESS: (0, "success"),
    Status.APPLICATION_ERROR: (1, "application error"),
    Status.ACTION_ERROR: (2, "action developer error"),
    Status.TIMEOUT: (2, "action developer error"),
    Status.SYSTEM_ERROR: (3, "whisk internal error"),
}
"""Each status as OpenWhisk's activation response gives it: its ``statusCode`` and the
``status`` text. OpenWhisk counts a run past its time limit as the developer's error
(and says so in its ``timeout`` annotation)."""

VERSION = "0.0.1"
"""OpenWhisk's default semantic version of an action, which its activations carry."""


def openwhisk_response(result: ActivationResult) -> dict[str, Any]:
    """The activation's ``response`` as OpenWhisk's API shows it (without the internal
    ``statusCode``): ``{"result", "status", "success"}``; a failure the handler did not
    report itself has ``{"error": ...}`` as its result, as in OpenWhisk."""
    _, status = OPENWHISK_STATUS[result.status]
    value: JsonValue = result.result
    if result.status not in (Status.SUCCESS, Status.APPLICATION_ERROR):
        value = {"error": result.error or status}
    return {"result": value, "status": status, "success": result.ok}


def openwhisk_activation(result: ActivationResult, action: Action | None) -> dict[str, Any]:
    """The activation record in OpenWhisk's shape (its controller's ``toExtendedJson``).

    ``start`` is when the run began, less its container's init on a cold or prewarm
    start, as OpenWhisk counts init in an activation's interval; an activation that
    never ran starts and ends when it was answered, or, for lack of that, at the time
    in its id. ``annotations`` are OpenWhisk's (``path``, ``kind``, ``limits``,
    ``waitTime``, ``initTime``, ``timeout``) where the action is known. A sequence's
    ``logs`` are its steps' activation ids, as OpenWhisk gives them.
    """
    end_ms = result.end_ms or _id_ms(result.activation_id)
    start_ms = result.start_ms or end_ms
    if result.start_ms and result.start in (Start.COLD, Start.PREWARM):
        start_ms -= round(result.init_ms)
    annotations: list[dict[str, Any]] = [
        {"key": "path", "value": f"{result.namespace}/{result.action}"},
        {"key": "waitTime", "value": round(result.wait_ms)},
        {"key": "timeout", "value": result.status is Status.TIMEOUT},
    ]
    if result.start in (Start.COLD, Start.PREWARM):
        annotations.append({"key": "initTime", "value": round(result.init_ms)})
    if action is not None:
        annotations += [
            {"key": "kind", "value": "sequence" if action.sequence else action.kind},
            {"key": "limits", "value": openwhisk_limits(action)},
        ]
    return {
        "activationId": result.activation_id,
        "namespace": result.namespace,
        "name": result.action,
        "subject": result.namespace,
        "version": VERSION,
        "publish": False,
        "start": start_ms,
        "end": end_ms,
        "duration": max(0, end_ms - start_ms),
        "response": openwhisk_response(result),
        "logs": list(result.steps) if result.steps else list(result.logs),
        "annotations": annotations,
    }


def openwhisk_summary(result: ActivationResult, action: Action | None) -> dict[str, Any]:
    """An activation as OpenWhisk lists it without ``docs=true``: no result or logs,
    the response's ``statusCode`` instead."""
    full = openwhisk_activation(result, action)
    summary = {key: value for key, value in full.items() if key not in ("response", "logs")}
    summary["statusCode"] = OPENWHISK_STATUS[result.status][0]
    return summary


def openwhisk_limits(action: Action) -> dict[str, int]:
    """An action's limits in OpenWhisk's units: ms, MB, and the intra-container
    concurrency (the log limit is the runtime's, the same for every action)."""
    return {
        "timeout": round(action.timeout_s * 1000),
        "memory": action.memory_mb,
        "concurrency": action.concurrency,
    }


def _id_ms(activation_id: str) -> int:
    """The creation time an activation id starts with (:func:`~broker_sched.model.new_id`)."""
    try:
        return int(activation_id[:12], 16)
    except ValueError:
        return 0
