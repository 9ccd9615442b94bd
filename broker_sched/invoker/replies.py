"""Sending an activation's result back to the controller that asked for it."""

from __future__ import annotations

from typing import Any

from broker_sched.model import Activation, ActivationResult, Status, encode
from transports.base import Delivery, Transport


async def answer(
    transport: Transport,
    delivery: Delivery,
    activation: Activation,
    status: Status,
    *,
    invoker_id: str,
    container_id: str = "",
    **fields: Any,
) -> None:
    """Send the result, then ack ``delivery``: the reply is out before the ack (a crash in
    between re-runs the activation instead of losing its result), in one round trip on
    transports that can (:meth:`Transport.reply_and_ack`)."""
    if not activation.reply_to:
        await delivery.ack()
        return
    result = _result(activation, status, invoker_id, container_id, fields)
    await transport.reply_and_ack(delivery, activation.reply_to, encode(result))


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
