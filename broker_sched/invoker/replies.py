"""Sending an activation's result back to the controller that asked for it."""

from __future__ import annotations

from typing import Any

from broker_sched.model import Activation, ActivationResult, Status, encode
from transports.base import Transport


async def send_result(
    transport: Transport,
    activation: Activation,
    status: Status,
    *,
    invoker_id: str,
    container_id: str = "",
    **fields: Any,
) -> None:
    """Send the result to ``activation.reply_to``; fields are ActivationResult's own."""
    if not activation.reply_to:
        return
    result = ActivationResult(
        activation_id=activation.id,
        namespace=activation.namespace,
        action=activation.action,
        status=status,
        container_id=container_id,
        invoker_id=invoker_id,
        **fields,
    )
    await transport.send(activation.reply_to, encode(result))
