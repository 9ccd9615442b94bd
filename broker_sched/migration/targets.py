"""The transports ``migrate move`` can write to: those that refuse a second copy of an id.

The plain ``publish`` has no idempotency key, so a move interrupted between "the target
has it" and "the source acked it" would copy those activations again on the re-run.
A target therefore needs :meth:`~transports.base.Transport.publish_once`, where the copy
and the "seen this id" record are one atomic step on the broker itself; backends that
have it say so with ``capabilities.publishes_once`` and their module says how long an id
is remembered (Redis: ``migration.move_marker_ttl_s``, a week by default; NATS: the
stream's ``duplicate_window``, so a re-run more than that window after an interruption
may copy the last unconfirmed batch again).

Kafka is not a target: its idempotent producer deduplicates only within one producer
session. To go back to Kafka, use drain mode (docs/migration.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from broker_sched.config import Settings
from broker_sched.errors import ConfigError
from transports.base import Transport
from transports.registry import available, resolve


@contextlib.asynccontextmanager
async def open_target(settings: Settings, name: str) -> AsyncIterator[Transport]:
    """Transport ``name``, connected; :class:`ConfigError` when it cannot publish once."""
    target = resolve(name)
    if not target.capabilities.publishes_once:
        targets = [known for known in available() if resolve(known).capabilities.publishes_once]
        raise ConfigError(
            f"move cannot write to {name!r}: it needs a target that refuses a second copy "
            f"of an activation ({', '.join(targets)}); to go back to kafka, use drain mode "
            "(docs/migration.md)"
        )
    async with target.from_settings(settings) as transport:
        yield transport
