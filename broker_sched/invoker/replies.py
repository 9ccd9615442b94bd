"""Answering an activation: its record kept, its result sent to the controller that asked."""

from __future__ import annotations

from typing import Any

from broker_sched.errors import BrokerSchedError
from broker_sched.metrics import RECORDS_NOT_WRITTEN
from broker_sched.model import Activation, ActivationResult, Status, encode
from transports.base import Delivery, Record, Transport


async def answer(
    transport: Transport,
    delivery: Delivery,
    activation: Activation,
    status: Status,
    *,
    invoker_id: str,
    record_ttl_s: float,
    container_id: str = "",
    **fields: Any,
) -> None:
    """Put the activation's record, send the result to the caller, and ack ``delivery``
    once the record is durable (:meth:`Transport.record_reply_and_ack`, one round trip
    where the transport can). An acked activation keeps its record even when the broker
    loses the reply on its way (the caller reads the record instead); a crash before the
    ack re-runs the activation rather than losing it."""
    result = _result(activation, status, invoker_id, container_id, fields)
    record = Record(activation.namespace, activation.id, encode(result), record_ttl_s)
    try:
        await transport.record_reply_and_ack(delivery, record, activation.reply_to)
    except BrokerSchedError:
        RECORDS_NOT_WRITTEN.inc()
        raise


def _result(
    activation: Activation,
    status: Status,
    invoker_id: str,
    container_id: str,
    fields: dict[str, Any],
) -> ActivationResult:
    return ActivationResult(
        activation_id=activation.id,
        namespace=activation.namespace,
        action=activation.action,
        status=status,
        container_id=container_id,
        invoker_id=invoker_id,
        **fields,
    )
