"""Targets for ``migrate move`` that refuse a second copy of an activation id.

The transport contract's ``publish`` has no idempotency key, so a move interrupted
between "the target has it" and "the source acked it" would copy those activations
again on the re-run. Each target here makes the copy and the "seen this id" record one
atomic step on the broker itself:

* **redis**: one Lua script sets a marker key ``bs:moved:{<stream>}:<id>`` (``SET NX``,
  expiring after ``migration.move_marker_ttl_s``) and appends the entry only if the
  marker was new. Exact for as long as the marker lives (a week by default).
* **nats**: the message carries the header ``Nats-Msg-Id: <id>``; JetStream drops a
  second message with the same id within the stream's ``duplicate_window`` (2 min
  unless the operator changed it) and says so in its ack. A re-run more than that
  window after an interruption may copy the last unconfirmed batch again.

Kafka is not a target: its idempotent producer deduplicates only within one producer
session. To go back to Kafka, use drain mode (docs/migration.md).

Both write what the transports write (same stream key and body field, same subject), so
ordinary container proxies consume the copies. Client libraries are imported lazily.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from broker_sched.config import Settings
from broker_sched.errors import (
    BrokerUnavailable,
    ConfigError,
    PayloadTooLarge,
    TransportError,
    TransportNotInstalled,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from broker_sched.migration.move import MoveTarget
    from transports.nats_jetstream import NatsJetStreamTransport

TARGETS = ("redis", "nats")
MSG_ID_HEADER = "Nats-Msg-Id"
MARKER_PREFIX = "bs:moved:"
REDIS_CONNECT_TIMEOUT_S = 3.0
REDIS_COMMAND_TIMEOUT_S = 5.0
_PLAIN_ID = re.compile(r"[\x21-\x7e]{1,200}")

COPY_ONCE_LUA = """
-- KEYS[1]: the marker, KEYS[2]: the stream. ARGV: marker ttl (s), body field, body,
-- MAXLEN ('' for none). 1 when appended now, 0 when the marker already existed.
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
if ARGV[4] == '' then
  redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[3])
else
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', ARGV[2], ARGV[3])
end
return 1
"""


def dedup_key(activation_id: str) -> str:
    """The id itself when it is plain printable ASCII, else its digest (it becomes a
    Redis key or a NATS header value)."""
    if _PLAIN_ID.fullmatch(activation_id):
        return activation_id
    return hashlib.sha256(activation_id.encode()).hexdigest()


@contextlib.asynccontextmanager
async def open_target(settings: Settings, name: str) -> AsyncIterator[MoveTarget]:
    """A connected target for transport ``name``; :class:`ConfigError` for other names."""
    if name == "redis":
        redis_target = RedisMoveTarget(settings)
        try:
            await redis_target.connect()
            yield redis_target
        finally:
            await redis_target.close()
    elif name == "nats":
        nats_target = NatsMoveTarget(settings)
        try:
            await nats_target.connect()
            yield nats_target
        finally:
            await nats_target.close()
    else:
        raise ConfigError(
            f"move cannot write to {name!r}: it needs a target that refuses a second copy "
            f"of an activation ({', '.join(TARGETS)}); to go back to kafka, use drain mode "
            "(docs/migration.md)"
        )


class RedisMoveTarget:
    name = "redis"

    def __init__(self, settings: Settings) -> None:
        try:
            from redis.asyncio import Redis
        except ImportError as exc:
            raise TransportNotInstalled("redis", "redis") from exc
        redis = settings.redis
        self.max_message_bytes = settings.max_payload_bytes
        self.maxlen = redis.maxlen
        self.marker_ttl_s = settings.migration.move_marker_ttl_s
        self._client: Redis = Redis.from_url(
            redis.url,
            username=redis.username,
            password=redis.password.get_secret_value() if redis.password else None,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
            socket_timeout=REDIS_COMMAND_TIMEOUT_S,
        )
        self._copy_once: AsyncScript = self._client.register_script(COPY_ONCE_LUA)

    async def connect(self) -> None:
        from transports.redis_streams import translated

        with translated("PING"):
            await self._client.ping()

    async def close(self) -> None:
        await self._client.aclose()

    async def put(self, queue: str, body: bytes, activation_id: str) -> bool:
        from transports.redis_streams import BODY_FIELD, stream_key, translated

        if len(body) > self.max_message_bytes:
            raise PayloadTooLarge(len(body), self.max_message_bytes)
        stream = stream_key(queue)
        marker = f"{MARKER_PREFIX}{{{stream}}}:{dedup_key(activation_id)}"
        with translated(f"copy {activation_id} to {queue}"):
            appended: Any = await self._copy_once(
                keys=[marker, stream],
                args=[self.marker_ttl_s, BODY_FIELD, body, self.maxlen or ""],
            )
        return bool(appended)


class NatsMoveTarget:
    name = "nats"

    def __init__(self, settings: Settings) -> None:
        from transports.nats_jetstream import NatsJetStreamTransport

        self.transport: NatsJetStreamTransport = NatsJetStreamTransport.from_settings(settings)
        self.duplicate_window_s: float | None = None

    async def connect(self) -> None:
        """Connect (which creates the stream if missing) and read its dedup window."""
        await self.transport.connect()
        with _nats_errors("stream info"):
            info = await self.transport.jetstream().stream_info(self.transport.stream)
        self.duplicate_window_s = info.config.duplicate_window

    async def close(self) -> None:
        await self.transport.close()

    async def put(self, queue: str, body: bytes, activation_id: str) -> bool:
        from nats.errors import MaxPayloadError

        from transports.nats_jetstream import queue_subject

        if len(body) > self.transport.max_message_bytes:
            raise PayloadTooLarge(len(body), self.transport.max_message_bytes)
        subject = queue_subject(self.transport.subject_prefix, queue)
        js = self.transport.jetstream()
        with _nats_errors(f"copy {activation_id} to {subject}"):
            try:
                ack = await js.publish(
                    subject, body, headers={MSG_ID_HEADER: dedup_key(activation_id)}
                )
            except MaxPayloadError as exc:
                raise PayloadTooLarge(len(body), self.transport.max_message_bytes) from exc
        return not ack.duplicate


@contextlib.contextmanager
def _nats_errors(action: str) -> Iterator[None]:
    """nats-py errors become the project's: unreachable or timed out → retryable."""
    from nats import errors as core
    from nats.js import errors as js

    unavailable = (
        core.TimeoutError,
        core.NoRespondersError,
        core.ConnectionClosedError,
        core.ConnectionDrainingError,
        core.ConnectionReconnectingError,
        core.StaleConnectionError,
        core.OutboundBufferLimitError,
        core.NoServersError,
        js.NoStreamResponseError,
        js.ServiceUnavailableError,
        TimeoutError,
        OSError,
    )
    try:
        yield
    except unavailable as exc:
        raise BrokerUnavailable(f"nats: {action}: {exc or type(exc).__name__}") from exc
    except core.Error as exc:
        raise TransportError(f"nats: {action}: {exc}") from exc
