"""Running one activation in a container: the same rules, whoever picked the container.

A container proxy pulls work for its own container; the ``sharding`` push pool picks a
container for each activation it is pushed. From the delivery to its ack both follow
these rules:

* a message that is not an activation is dead-lettered and acked, never retried;
* an activation whose deadline passed while it was queued is answered ``timeout``
  without running: its caller has stopped waiting;
* the run gets what is left of the deadline when it got its container, at most the
  action's own timeout (nothing left: answered ``timeout`` without running);
* the activation's record is durable before the delivery is acked, and the result is
  sent to the caller beside it (:func:`~.replies.answer`);
* a crashed container gives its activation back to the queue for another container,
  until ``MAX_ATTEMPTS`` containers crashed on it: then it is answered ``system_error``,
  so one poisonous payload cannot take down containers forever.
"""

from __future__ import annotations

import time

from broker_sched.errors import MalformedMessage
from broker_sched.invoker.replies import answer
from broker_sched.model import Activation, Start, Status, decode, now_ms
from broker_sched.runtime.base import Container
from transports.base import Delivery, Transport

MAX_ATTEMPTS = 3
"""An activation that crashed this many containers is answered with a system error."""


async def accept(
    transport: Transport,
    queue: str,
    delivery: Delivery,
    *,
    invoker_id: str,
    record_ttl_s: float,
) -> tuple[Activation, int] | None:
    """The delivery's activation and when it was received (ms), or None when it was
    settled here: dead-lettered as malformed, or answered as past its deadline."""
    try:
        activation = decode(Activation, delivery.body)
    except MalformedMessage as exc:
        await transport.dead_letter(queue, delivery.body, str(exc))
        await delivery.ack()
        return None
    received_ms = now_ms()
    if received_ms > activation.deadline_ms:
        await answer(
            transport,
            delivery,
            activation,
            Status.TIMEOUT,
            invoker_id=invoker_id,
            record_ttl_s=record_ttl_s,
            error="deadline passed while queued",
        )
        return None
    return activation, received_ms


async def run_activation(
    transport: Transport,
    delivery: Delivery,
    activation: Activation,
    container: Container,
    *,
    received_ms: int,
    start: Start,
    init_ms: float,
    invoker_id: str,
    record_ttl_s: float,
    service_since_s: float | None = None,
    previous_answer_ms: float = 0.0,
) -> float:
    """Run ``activation`` in ``container`` (resumed or created already) and answer it;
    returns how long the answer took, in ms.

    With ``service_since_s`` (the fetch that brought it) the result carries
    ``service_ms``: from then to the answer, plus ``previous_answer_ms``, the last
    answer's own cost (this one's is under way while the result travels). A crash
    raises :class:`~broker_sched.runtime.base.ContainerCrashed`; hand it to
    :func:`give_back`.
    """
    remaining_s = (activation.deadline_ms - received_ms) / 1000
    if remaining_s <= 0:
        await answer(
            transport,
            delivery,
            activation,
            Status.TIMEOUT,
            invoker_id=invoker_id,
            record_ttl_s=record_ttl_s,
            error="deadline passed while waiting for a container",
        )
        return 0.0
    started_ms = now_ms()
    outcome = await container.run(activation.payload, min(container.action.timeout_s, remaining_s))
    answering_s = time.monotonic()
    service = {}
    if service_since_s is not None:
        service["service_ms"] = (answering_s - service_since_s) * 1000 + previous_answer_ms
    await answer(
        transport,
        delivery,
        activation,
        outcome.status,
        result=outcome.result,
        error=outcome.error,
        start=start,
        wait_ms=max(0.0, received_ms - activation.published_ms),
        init_ms=init_ms,
        run_ms=outcome.run_ms,
        logs=list(outcome.logs),
        start_ms=started_ms,
        end_ms=now_ms(),
        invoker_id=invoker_id,
        record_ttl_s=record_ttl_s,
        container_id=container.id,
        **service,
    )
    return (time.monotonic() - answering_s) * 1000


async def give_back(
    transport: Transport,
    delivery: Delivery,
    reason: str,
    *,
    invoker_id: str,
    record_ttl_s: float,
    container_id: str,
) -> None:
    """The work of a crashed container: redelivered, or after ``MAX_ATTEMPTS`` answered
    with a system error."""
    if delivery.attempt < MAX_ATTEMPTS:
        await delivery.nack()
        return
    try:
        activation = decode(Activation, delivery.body)
    except MalformedMessage:
        await delivery.ack()
        return
    await answer(
        transport,
        delivery,
        activation,
        Status.SYSTEM_ERROR,
        error=f"container crashed on {delivery.attempt} attempts: {reason}",
        invoker_id=invoker_id,
        record_ttl_s=record_ttl_s,
        container_id=container_id,
    )
