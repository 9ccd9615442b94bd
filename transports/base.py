"""The one contract every broker backend implements.

Two kinds of channel cross the broker:

* **Queues** are durable, per-action work queues consumed by a *group* whose *members*
  share the work: each message goes to one member at a time and stays in flight until
  that member acks it. A member that nacks, closes, dies or stalls past the backend's
  redelivery deadline gives its unacked messages back to the group (at-least-once).
  A group that subscribes after messages were published still receives them, so a
  controller can publish before any container exists. A queue is consumed by one group
  in normal operation; backends may support more.
* **Channels** are ephemeral fan-out subjects for replies and heartbeats: a listener
  receives what is sent after :meth:`Transport.listen` returns, nothing earlier, and
  nothing survives a broker restart. Losing a reply is recoverable (the answer's record
  is durable before its work is acked, and the caller reads it), losing work is not,
  hence the split.

Backends translate their client's exceptions into :mod:`broker_sched.errors` at this
boundary and import their client lazily, so the core never depends on a broker client.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, ClassVar, Self
from urllib.parse import urlsplit

import anyio
import anyio.lowlevel
from pydantic import BaseModel, ConfigDict

from broker_sched.errors import BrokerSchedError, ConfigError, PayloadTooLarge

if TYPE_CHECKING:
    from broker_sched.config import Settings

log = logging.getLogger(__name__)

DEAD_LETTER_SUFFIX = ".dlq"
_PLAIN_ID = re.compile(r"[\x21-\x7e]{1,200}")

CLOSE_TIMEOUT_S = 10.0
"""How long closing may take when a context exits. The close is shielded: an exit is
often a cancellation, and a cancelled close would leave a member's work unreturned."""


def dead_letter_queue(queue: str) -> str:
    return f"{queue}{DEAD_LETTER_SUFFIX}"


def dedup_key(message_id: str) -> str:
    """The id itself when it is plain printable ASCII, else its digest: what a backend
    stores for :meth:`Transport.publish_once` (a Redis key, a NATS header value)."""
    if _PLAIN_ID.fullmatch(message_id):
        return message_id
    return hashlib.sha256(message_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Backlog:
    """How much work a group has not finished.

    ``pending``: appended but not yet delivered to the group. ``in_flight``: delivered,
    not yet acked. ``oldest_age_s``: age of the oldest pending message, when known.
    """

    pending: int
    in_flight: int
    partitions: int = 1
    oldest_age_s: float | None = None
    appended: int | None = None
    """How many messages the queue has taken since it was made, by the broker's own
    counter (None: this backend cannot tell). Its growth between two reads is the whole
    cluster's arrival rate, whichever controller published."""

    @property
    def total(self) -> int:
        return self.pending + self.in_flight


@dataclass(frozen=True, slots=True)
class Record:
    """A record for :meth:`Transport.put_record`: ``body`` under ``scope``/``key``,
    kept for ``ttl_s``."""

    scope: str
    key: str
    body: bytes
    ttl_s: float


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do, so callers and tests branch on features, never on names.

    ``partitioned``: a queue has partitions and at most one member per partition does
    work (:meth:`Transport.max_consumers`). ``rebalances``: members joining or leaving
    pause the others. ``publishes_once``: :meth:`Transport.publish_once` refuses a
    second message with the same id, on the broker itself. ``renews_deliveries``:
    :meth:`Delivery.in_progress` pushes the redelivery window back, so a delivery kept
    renewed is never handed to another member however long its run.
    """

    partitioned: bool = False
    rebalances: bool = False
    publishes_once: bool = False
    renews_deliveries: bool = False
    leases: bool = False
    """:meth:`Transport.acquire_lease` and :meth:`Transport.release_lease` work: the
    broker itself keeps an expiring lease per name and a fencing token that grows."""
    assigns_shards: bool = False
    """:meth:`Transport.hold_shards` works: the broker's group coordinator hands shards
    out among the holders (where it has no compare-and-set to build leases on)."""


def broker_addresses(
    setting: str,
    text: str,
    *,
    schemes: Sequence[str] = (),
    default_port: int | None = None,
    many: bool = True,
) -> list[tuple[str, int]]:
    """The (host, port) pairs of a broker address setting: comma-separated if ``many``,
    each a bare ``host:port`` or, where ``schemes`` allows, ``scheme://host:port[/...]``;
    without a port, ``default_port`` (None: the port is required).

    Checked before any client sees them, because the clients fail on a malformed one
    deep inside (a port of ``4522x`` ends in an ``int()`` error or an assertion), with
    nothing that names the setting: here it is one :class:`ConfigError` line that does.
    """
    items = [i.strip() for i in text.split(",")] if many else [text.strip()]
    if not any(items):
        raise ConfigError(f"{setting}: empty, expected host:port")
    form = "host:port" if default_port is None else "host[:port]"
    expected = f"{schemes[0]}://{form}" if schemes else form
    pairs = []
    for item in filter(None, items):
        parts = urlsplit(item if "://" in item else f"//{item}")
        if parts.scheme and parts.scheme not in schemes:
            scheme = parts.scheme
            raise ConfigError(f"{setting}: {item!r} has scheme {scheme!r}, expected {expected}")
        try:
            port = parts.port
        except ValueError:  # not a number, or out of 0-65535
            raise ConfigError(f"{setting}: {item!r} is not {expected} (bad port)") from None
        port = default_port if port is None else port
        stray = not parts.scheme and (parts.path or parts.query)  # "host/x", "http//host"
        if not parts.hostname or port is None or stray:
            raise ConfigError(f"{setting}: {item!r} is not {expected}")
        pairs.append((parts.hostname, port))
    return pairs


class BackendSettings(BaseModel):
    """A backend's own settings section: ``[<section>]`` in the TOML file and
    ``BROKER_SCHED_<SECTION>__<KEY>`` in the environment; unknown keys are an error, as
    everywhere in the settings. The transport class registers it
    (:attr:`Transport.settings_model`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Delivery(ABC):
    """One message handed to one member; finish it with exactly one ack or nack."""

    body: bytes
    id: str
    attempt: int

    @abstractmethod
    async def ack(self) -> None: ...

    @abstractmethod
    async def nack(self, delay_s: float = 0.0) -> None:
        """Give the message back to the group, redelivered after ``delay_s``."""

    async def in_progress(self) -> None:  # noqa: B027 - optional hook, default is no-op
        """Push back the redelivery deadline during a long run by a whole
        :attr:`Transport.redelivery_window_s` (no-op where the transport has no window or
        cannot renew: ``capabilities.renews_deliveries`` says which)."""


class Subscription(ABC):
    """A member's handle on a group; closing it leaves the group cleanly."""

    queue: str
    group: str
    member: str

    async def fetch(self, max_messages: int = 1, timeout_s: float = 1.0) -> list[Delivery]:
        """Up to ``max_messages`` deliveries; an empty list when ``timeout_s`` passes.

        A fetch in a cancelled scope raises, and what it had already taken goes back to
        the group at once. On Python 3.11, ``asyncio.wait_for`` returns the inner result
        instead of raising when the cancellation lands as the inner call finishes (fixed
        in 3.12), and broker clients use it on every command (redis-py's
        ``send_packed_command``, for one). anyio's cancellation is level-triggered, so
        the checkpoint here raises again even when the client swallowed it; a bare
        ``Task.cancel()`` outside any cancel scope gets no such second delivery.
        """
        deliveries = await self._fetch(max_messages, timeout_s)
        try:
            await anyio.lowlevel.checkpoint_if_cancelled()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                for delivery in deliveries:
                    await delivery.nack()
            raise
        return deliveries

    @abstractmethod
    async def _fetch(self, max_messages: int, timeout_s: float) -> list[Delivery]: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            await self.close()


class Listener(ABC):
    """A receiver on an ephemeral channel."""

    channel: str

    async def receive(self, timeout_s: float = 1.0) -> bytes | None:
        """The next message, or ``None`` when ``timeout_s`` passes.

        A cancellation the client swallowed (see :meth:`Subscription.fetch`) needs no
        check here: a lost reply is recoverable, and the caller's next await inside the
        cancelled scope raises again.
        """
        return await self._receive(timeout_s)

    @abstractmethod
    async def _receive(self, timeout_s: float) -> bytes | None: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            await self.close()


class Transport(ABC):
    """A connection to one broker; use it as an async context manager."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    settings_section: ClassVar[str | None] = None
    """The backend's section of the settings; backends that share a section (``kafka``
    and ``kafka-share``) register the same model for it."""
    settings_model: ClassVar[type[BackendSettings] | None] = None
    redelivery_window_s: float | None = None
    """How long an unacked delivery stays its member's without
    :meth:`Delivery.in_progress` before the group may hand it to another member; ``None``
    when deliveries are held for as long as the member lives (Kafka's partitions)."""

    def __init__(self, *, max_message_bytes: int = 1_048_576) -> None:
        self.max_message_bytes = max_message_bytes

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: Settings) -> Self: ...

    async def connect(self) -> None:  # noqa: B027 - backends without a connection skip it
        """Open connections; raise :class:`BrokerUnavailable` if the broker is unreachable."""

    async def close(self) -> None:  # noqa: B027 - backends without a connection skip it
        """Release connections; safe to call twice."""

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
            await self.close()

    @abstractmethod
    async def ping(self) -> str:
        """Round trip to the broker; returns a description such as its version."""

    @abstractmethod
    async def declare(self, queue: str, partitions: int = 1) -> None:
        """Create ``queue`` if missing; never shrinks or fails if it exists."""

    async def publish(self, queue: str, body: bytes, key: str | None = None) -> None:
        """Durably append ``body``; returns once the broker has it.

        Raises :class:`PayloadTooLarge` before touching the broker when ``body`` is over
        ``max_message_bytes``, so every backend rejects the same sizes.
        """
        if len(body) > self.max_message_bytes:
            raise PayloadTooLarge(len(body), self.max_message_bytes)
        await self._publish(queue, body, key)

    @abstractmethod
    async def _publish(self, queue: str, body: bytes, key: str | None) -> None: ...

    async def publish_once(self, queue: str, body: bytes, message_id: str) -> bool:
        """Append ``body`` unless a message with ``message_id`` was appended before.

        True when appended now, False when the broker already had that id. The check and
        the append are one step on the broker, so a retry after a lost confirmation
        never makes a second copy; how long an id is remembered is the backend's (its
        module says). Only where ``capabilities.publishes_once``; size limits as for
        :meth:`publish`.
        """
        if len(body) > self.max_message_bytes:
            raise PayloadTooLarge(len(body), self.max_message_bytes)
        return await self._publish_once(queue, body, dedup_key(message_id))

    async def _publish_once(self, queue: str, body: bytes, key: str) -> bool:
        raise NotImplementedError(f"the {self.name} transport cannot publish once per id")

    @abstractmethod
    async def subscribe(self, queue: str, group: str, member: str) -> Subscription: ...

    @abstractmethod
    async def backlog(self, queue: str, group: str) -> Backlog:
        """Counts for ``group``; a group that never subscribed has everything pending."""

    async def backlogs(self, pairs: Sequence[tuple[str, str]]) -> list[Backlog]:
        """Backlogs of many ``(queue, group)`` pairs; backends override to batch."""
        backlogs: list[Backlog | None] = [None] * len(pairs)

        async def read(index: int, queue: str, group: str) -> None:
            backlogs[index] = await self.backlog(queue, group)

        async with anyio.create_task_group() as reading:
            for index, (queue, group) in enumerate(pairs):
                reading.start_soon(read, index, queue, group)
        return [backlog for backlog in backlogs if backlog is not None]

    async def resize(self, queue: str, partitions: int) -> int:
        """Grow ``queue`` to ``partitions``; returns the count now in force."""
        return 1

    async def max_consumers(self, queue: str) -> int | None:
        """How many members can work at once (the partition count), or ``None``: no limit."""
        return None

    @abstractmethod
    async def delete(self, queue: str) -> None:
        """Remove ``queue`` and its groups (tests, clean-up); missing is fine."""

    @abstractmethod
    async def send(self, channel: str, body: bytes) -> None: ...

    @abstractmethod
    async def listen(self, channel: str) -> Listener:
        """Start receiving ``channel``; messages sent after this returns are delivered."""

    async def delete_channel(self, channel: str) -> None:  # noqa: B027 - optional, default no-op
        """Remove what ``channel`` left on the broker (a dead component's channel);
        nothing for backends whose channels leave nothing behind once unheard."""

    @abstractmethod
    async def put_record(self, scope: str, key: str, body: bytes, ttl_s: float) -> None:
        """Keep ``body`` under ``scope``/``key`` for ``ttl_s``, readable by every client.

        Records are small documents any controller can serve (activation records);
        ``scope`` and ``key`` are ``[A-Za-z0-9_-]`` and keys sort by time. Each record
        expires after its own ``ttl_s``; a backend whose storage retention is set once
        (a NATS bucket's, a Kafka topic's) takes the first ``ttl_s`` for it.
        """

    @abstractmethod
    async def get_record(self, scope: str, key: str) -> bytes | None:
        """The record, or None when there is none (never put, or expired)."""

    @abstractmethod
    async def recent_records(self, scope: str, limit: int) -> list[bytes]:
        """Up to ``limit`` of the scope's unexpired records, newest first."""

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> int | None:
        """Take the lease ``name`` for ``holder``, or renew it when ``holder`` has it.

        One step on the broker: two holders never both get a lease that has not
        expired. Returns the lease's fencing token, or None when another holder has it.
        A token is larger than every token an earlier holder of ``name`` got, so whoever
        receives orders stamped with tokens can refuse a deposed holder's; a renewal may
        keep or raise it. The lease expires ``ttl_s`` after the last take or renewal, on
        the broker's clock. ``name`` and ``holder`` are ``[A-Za-z0-9_-]``. Only where
        ``capabilities.leases``.
        """
        raise NotImplementedError(f"the {self.name} transport keeps no leases")

    async def release_lease(self, name: str, holder: str) -> None:
        """Give up ``name`` if ``holder`` has it (a clean stop, or a share handed on), so
        the next holder need not wait for it to expire; otherwise nothing."""
        raise NotImplementedError(f"the {self.name} transport keeps no leases")

    async def hold_shards(self, holder: str, shards: int, ttl_s: float) -> dict[int, int]:
        """The shards (``0 .. shards - 1``) the broker assigns ``holder`` now, each with
        a fencing token that grows with every reassignment; the first call joins the
        holders' group, and a holder that stops calling leaves it within ``ttl_s``, its
        shards going to the others. Empty while a reassignment is under way. Every
        holder must pass the same ``shards`` and ``ttl_s``. Only where
        ``capabilities.assigns_shards``.
        """
        raise NotImplementedError(f"the {self.name} transport assigns no shards")

    async def release_shards(self, holder: str) -> None:
        """Leave the holders' group at once (a clean stop), so the others need not wait
        out the ttl."""
        raise NotImplementedError(f"the {self.name} transport assigns no shards")

    async def reply_and_ack(self, delivery: Delivery, channel: str, body: bytes) -> None:
        """Send ``body`` on ``channel``, then ack ``delivery``: the reply always reaches
        the broker before the ack (a crash in between re-runs the work), though a broker
        that dies before passing the reply on keeps the ack and loses the reply. The bare
        request-reply floor ``bench overhead`` measures; activations are answered with
        :meth:`record_reply_and_ack`, which keeps what this can lose. Backends override
        it to do both in one round trip; this default takes two.
        """
        await self.send(channel, body)
        await delivery.ack()

    async def record_reply_and_ack(
        self, delivery: Delivery, record: Record, channel: str = ""
    ) -> None:
        """Put ``record``, send its body on ``channel`` (none when empty), and ack
        ``delivery`` once the record is durable: an answer acked is an answer kept, even
        when the broker dies before the reply reaches its listener (a crash before the
        ack re-runs the work instead). The reply is a courtesy to a caller waiting on
        the channel, who reads the record when it does not come, so a failed send is
        logged and does not stop the ack. Backends override it to take one round trip;
        this default sends the reply while the record is put, then acks.
        """
        failure: Exception | None = None
        async with anyio.create_task_group() as replying:
            if channel:
                replying.start_soon(self._reply, channel, record.body)
            try:
                await self.put_record(record.scope, record.key, record.body, record.ttl_s)
                await delivery.ack()
            except Exception as exc:  # raised below as itself, not in an ExceptionGroup
                failure = exc
                replying.cancel_scope.cancel()
        if failure is not None:
            raise failure

    async def _reply(self, channel: str, body: bytes) -> None:
        try:
            await self.send(channel, body)
        except BrokerSchedError as exc:
            log.warning(
                "%s: a reply on %s was not sent (its record was kept): %s", self.name, channel, exc
            )

    async def dead_letter(self, queue: str, body: bytes, reason: str) -> None:
        """Park an unusable message with the reason, keeping its bytes intact."""
        envelope = {
            "v": 1,
            "queue": queue,
            "reason": reason,
            "body_b64": base64.b64encode(body).decode(),
        }
        target = dead_letter_queue(queue)
        await self.declare(target)
        await self._publish(target, json.dumps(envelope).encode(), None)
