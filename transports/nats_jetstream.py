"""NATS JetStream transport (nats-py): any number of members share a queue, no rebalances.

Features:

* One WorkQueue stream (``[nats] stream``, default ``BROKER_SCHED``) over the subjects
  ``{subject_prefix}.>``; a queue is the subject ``{subject_prefix}.{queue}``. WorkQueue
  retention removes a message once it is acked, so storage stays bounded by the work not
  yet done; the price is one group per queue (a second group on the same queue is
  refused by the server: "filtered consumer not unique on workqueue stream").
* A group is one durable pull consumer per (queue, group), shared by all its members:
  deliver policy ALL (a group that subscribes late gets everything still stored), explicit
  acks, ``ack_wait_s`` and ``max_deliver`` from settings, up to 10,000 unacked messages.
  Creating it is idempotent and applies the current settings to an existing consumer.
* Redelivery: ``nack`` gives a message back at once or after ``delay_s``; ``close`` naks
  everything the member holds; a member that vanishes loses its messages to the others
  after ``ack_wait_s`` (``Delivery.in_progress`` pushes that deadline back).
* ``ack``/``nack`` wait for the server's confirmation (JetStream "double ack"): when they
  return, ``backlog`` and the other members already see the effect.
* Backlog: the consumer's ``num_pending`` and ``num_ack_pending``; before the group ever
  subscribed, the number of messages stored on the queue's subject. ``backlogs`` sends
  one request per queue, all at once (about 0.1 ms per queue at 1,000 queues on
  loopback), plus one stream-info request shared by the groups that never subscribed.
* ``publish_once``: the message carries the header ``Nats-Msg-Id: <id>``; JetStream
  drops a second message with the same id within the stream's ``duplicate_window`` (2 min
  unless the operator changed it) and says so in its ack.
* Channels are core NATS subjects ``_chan.{subject_prefix}.{channel}``: fire-and-forget,
  outside the stream, received only by listeners subscribed at the time.
* Records live in a KV bucket ``{stream}_RECORDS`` (one revision per key), keys
  ``{scope}.{key}``, each value its expiry time, a newline, then the record: a read
  skips an expired one, and the bucket's own TTL (the first ``ttl_s`` put, NATS 2.9 has
  no per-message TTL) bounds what is stored. A listing watches the scope's keys (headers
  only), sorts them and gets the newest.

URL and options (``[nats]`` settings): ``servers`` ("nats://host:4222", comma-separated
for a cluster), ``stream``, ``subject_prefix``, ``ack_wait_s`` (default 3: an invoker sends
``+WPI`` for what it runs on every heartbeat), ``max_deliver`` (-1 =
unlimited), ``user``/``password``, ``creds_file`` (JWT + NKey), ``nkeys_seed_file``,
``stream_replicas`` (replicas of the stream and the records bucket when this creates
them: 3 on a 3-node cluster keeps every acknowledged publish through a node's death).
``max_payload_bytes`` becomes ``max_message_bytes``.

Connection: the first connect gives up after ``connect_timeout_s`` (default 3 s) with
:class:`BrokerUnavailable`; once connected, the client reconnects forever with
exponential backoff (0.1 s doubling to 5 s, jittered) and replays its subscriptions.
While it is disconnected every call fails at once with :class:`BrokerUnavailable`
instead of queueing in the client's buffer.

Limits:

* The server's ``max_payload`` (1 MiB by default) must be at least ``max_message_bytes``;
  :meth:`NatsJetStreamTransport.connect` refuses with :class:`ConfigError` otherwise.
  Bodies go out without headers, so a body of exactly ``max_message_bytes`` fits
  (``publish_once`` adds one header, which the server counts against ``max_payload``).
* A nacked message waiting for redelivery counts as ``in_flight`` (the server keeps it
  in the consumer's ack-pending set), not ``pending``; ``Backlog.total`` is exact.
* ``oldest_age_s`` is not reported (it would cost a second request per queue).
* ``key`` is ignored: there are no partitions. ``resize`` is a no-op.
* ``declare`` creates the stream if missing and never alters an existing one; a stream
  created by an operator with Limits retention still works, but then the count for a
  group that never subscribed includes already-acked messages.
* With ``max_deliver`` set, a message that exhausts its deliveries stays in the stream
  (WorkQueue removes only acked messages) until ``delete`` purges the queue.
* Queue names are subject tokens ``[A-Za-z0-9_-]`` joined by ``.``.
* At most 512 members of one group can wait in ``fetch`` at the same time (the server's
  default ``max_waiting`` per consumer); more get a 409 status, raised as TransportError.
* Servers before 2.10.14 can redeliver a nacked message with a delivery count of 1 when
  a delivery to a pull request failed under load (fixed upstream in nats-server#5305 and
  #5338); Debian 12 ships 2.9.10. A member therefore remembers what it nacked (the last
  ``NACK_MEMORY`` messages) and reports at least one attempt more when it gets one back;
  a redelivery to another member carries the server's count.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import random
import re
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import anyio
from pydantic import Field, SecretStr

from broker_sched.errors import (
    BrokerUnavailable,
    ConfigError,
    PayloadTooLarge,
    TransportError,
    TransportNotInstalled,
)
from transports.base import (
    BackendSettings,
    Backlog,
    Capabilities,
    Delivery,
    Listener,
    Record,
    Subscription,
    Transport,
    broker_addresses,
)

if TYPE_CHECKING:
    from nats.aio.client import Client, Server
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription as CoreSubscription
    from nats.js import JetStreamContext
    from nats.js.api import ConsumerInfo
    from nats.js.kv import KeyValue

    from broker_sched.config import Settings

log = logging.getLogger(__name__)

MAX_ACK_PENDING = 10_000
"""Unacked messages per group before the server stops delivering; far above any pool."""
NACK_MEMORY = 10_000
"""How many nacked messages a member remembers, to count their next attempt right."""
PULL_GRACE_S = 0.25
"""How long past a pull request's expiry to wait for the server's end-of-request status."""
MIN_PULL_WAIT_S = 0.01
RECONNECT_FIRST_DELAY_S = 0.1
RECONNECT_MAX_DELAY_S = 5.0
INITIAL_RETRY_WAIT_S = 1
"""Pause between attempts during the first connect (nats-py takes whole seconds)."""
CHANNEL_ROOT = "_chan"
STATUS_HEADER = "Status"
MSG_ID_HEADER = "Nats-Msg-Id"
DESCRIPTION_HEADER = "Description"
REQUEST_ENDED = ("404", "408")
"""Pull statuses that end a request normally: no messages now, or the request expired."""
HEARTBEAT = "100"
MAX_READABLE_NAME = 96
"""Consumer names become file names on the server; keep them well under 255 bytes."""
STREAM_NAME_IN_USE = 10058
"""JetStream error code: a stream of that name exists with another configuration."""
NOT_UNIQUE_ON_WORKQUEUE = 10100
"""JetStream error code: a second consumer filtering the same subject of a WorkQueue."""

_TOKEN = r"[A-Za-z0-9_-]+"
_QUEUE_NAME = re.compile(rf"{_TOKEN}(?:\.{_TOKEN})*")
_STREAM_NAME = re.compile(_TOKEN)
_SCHEMES = ("nats", "tls", "ws", "wss")
"""The URL schemes nats-py connects with; ``nats.servers`` may also give bare host:port."""
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9_-]")
_UNSAFE_IN_SUBJECT = re.compile(r"[\s*>]|^\.|\.$|\.\.")


def _require_nats() -> None:
    try:
        import nats  # noqa: F401
    except ImportError as exc:
        raise TransportNotInstalled("nats", "nats") from exc


def _check_key_files(files: dict[str, str | None]) -> None:
    """A credentials or seed file that is missing, or set without the ``nkeys`` package
    nats-py reads it with, is one line naming the setting, not a traceback from inside
    nats-py's connect."""
    for setting, path in files.items():
        if path is None:
            continue
        if not os.path.isfile(path):
            raise ConfigError(f"{setting}: {path!r} is not a file")
        if importlib.util.find_spec("nkeys") is None:
            raise ConfigError(f"{setting}: needs the nkeys package (pip install nkeys)")


def queue_subject(prefix: str, queue: str) -> str:
    if not _QUEUE_NAME.fullmatch(queue):
        raise ValueError(f"queue name {queue!r} is not NATS subject tokens [A-Za-z0-9_-] and '.'")
    return f"{prefix}.{queue}"


def channel_subject(prefix: str, channel: str) -> str:
    """Outside ``{prefix}.>`` on purpose: channel traffic must never be stored."""
    if not channel or _UNSAFE_IN_SUBJECT.search(channel):
        raise ValueError(f"channel name {channel!r} is not a valid NATS subject")
    return f"{CHANNEL_ROOT}.{prefix}.{channel}"


def consumer_name(queue: str, group: str) -> str:
    """A deterministic, valid durable name: readable part plus a digest against collisions
    (``a.b`` and ``a_b`` sanitize alike)."""
    readable = (_consumer_prefix(queue) + _UNSAFE_IN_NAME.sub("_", group))[:MAX_READABLE_NAME]
    digest = hashlib.sha256(f"{queue}\0{group}".encode()).hexdigest()[:12]
    return f"{readable}-{digest}"


def _consumer_prefix(queue: str) -> str:
    """What every consumer name of ``queue`` starts with (when not truncated)."""
    return _UNSAFE_IN_NAME.sub("_", queue) + "__"


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """nats-py exceptions become the project's: unreachable or timed out → retryable
    :class:`BrokerUnavailable`; anything the server refused → :class:`TransportError`."""
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


async def _discard(nc: Client) -> None:
    """Close a client whose connect failed. nats-py's close asserts that connect got as
    far as making its queues; one that failed before (a URL or credentials file it could
    not use) has nothing open, and that assertion must not replace the connect's own
    error."""
    with contextlib.suppress(AssertionError):
        await nc.close()


def _reconnect_backoff(servers: list[Server], _info: dict[str, Any]) -> tuple[Server, float]:
    """The least-tried server, after an exponential, jittered pause."""
    server = min(servers, key=lambda s: s.reconnects)
    delay_s = min(RECONNECT_FIRST_DELAY_S * 2**server.reconnects, RECONNECT_MAX_DELAY_S)
    return server, delay_s * random.uniform(0.8, 1.2)


def _status(msg: Msg) -> str | None:
    return (msg.headers or {}).get(STATUS_HEADER)


class NatsDelivery(Delivery):
    def __init__(self, subscription: NatsSubscription, msg: Msg) -> None:
        metadata = msg.metadata
        self.body = msg.data
        self.id = str(metadata.sequence.stream)
        self.attempt = metadata.num_delivered
        self.reply = msg.reply
        self._subscription = subscription
        self._settled = False

    async def ack(self) -> None:
        await self._settle(b"+ACK", "ack")

    async def nack(self, delay_s: float = 0.0) -> None:
        payload = b"-NAK"
        if delay_s > 0:
            payload += b" " + json.dumps({"delay": int(delay_s * 1e9)}).encode()
        await self._settle(payload, "nack", nacked=True)

    async def in_progress(self) -> None:
        if not self._settled:
            nc = self._subscription.transport.client()
            with _translated(f"in_progress for message {self.id}"):
                await nc.publish(self.reply, b"+WPI")

    async def _settle(self, payload: bytes, verb: str, *, nacked: bool = False) -> None:
        """Send the (n)ack and wait for the server to confirm it; a second call is a no-op."""
        if self._settled:
            return
        transport = self._subscription.transport
        nc = transport.client()
        with _translated(f"{verb} message {self.id}"):
            await nc.request(self.reply, payload, timeout=transport.request_timeout_s)
        self._settled = True
        self._subscription.settled(self, nacked=nacked)


@dataclass(slots=True)
class _PullRequest:
    reply: str
    batch: int
    deadline: float
    received: int = 0


class NatsSubscription(Subscription):
    """A member pulling from the group's durable consumer through its own inbox.

    The pull protocol is spoken here rather than through nats-py's ``fetch`` so that no
    message the server sends is dropped on the floor: every request has its own reply
    subject, ``fetch`` waits for the server to end the request (batch filled, or a 404/408
    status) and keeps anything that arrives later (after a cancelled ``fetch``, say) for
    the next ``fetch``; ``close`` gives it back with the unacked deliveries. Otherwise such
    a message would sit unseen, in flight, until ``ack_wait_s`` expired. Each ``fetch``
    first asks with ``no_wait`` for up to ``max_messages`` already there, then, if there
    were none, waits for one: it returns as soon as there is work and leaves no request
    open behind it. A fetch of one skips the ``no_wait`` ask (the waiting request
    returns at once when a message is there), which halves a busy member's requests.
    (The server itself drops pull requests whose inbox lost interest.)
    """

    def __init__(
        self, transport: NatsJetStreamTransport, queue: str, group: str, member: str, durable: str
    ) -> None:
        self.queue, self.group, self.member = queue, group, member
        self.transport = transport
        self._next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{transport.stream}.{durable}"
        self._durable = durable
        self._inbox = ""
        self._core: CoreSubscription | None = None
        self._arrived: deque[Msg] = deque()
        self._arrival = asyncio.Event()
        self._undelivered: deque[Msg] = deque()
        self._unacked: dict[str, NatsDelivery] = {}
        self._nacked: OrderedDict[str, int] = OrderedDict()
        self._open: _PullRequest | None = None
        self._requests = 0
        self._lock = asyncio.Lock()
        self._closed = False

    async def start(self) -> None:
        nc = self.transport.client()
        self._inbox = nc.new_inbox()
        with _translated(f"subscribe to {self._inbox}"):
            self._core = await nc.subscribe(f"{self._inbox}.*", cb=self._on_message)

    async def _on_message(self, msg: Msg) -> None:
        self._arrived.append(msg)
        self._arrival.set()

    async def _fetch(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        async with self._lock:
            if self._closed:
                raise RuntimeError("fetch on a closed subscription")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            self._sort_arrivals()
            if not self._undelivered and max_messages > 1:
                await self._pull(max_messages, wait_s=0.0, deadline=deadline + PULL_GRACE_S)
            wait_s = deadline - loop.time()
            if not self._undelivered and wait_s >= MIN_PULL_WAIT_S:
                await self._pull(1, wait_s=wait_s, deadline=deadline + PULL_GRACE_S)
            return self._hand_out(max_messages)

    async def _pull(self, batch: int, *, wait_s: float, deadline: float) -> None:
        """One pull request, awaited until the server ends it or ``deadline`` passes."""
        nc = self.transport.client()
        self._requests += 1
        request: dict[str, Any] = {"batch": batch}
        if wait_s > 0:
            request["expires"] = int(wait_s * 1e9)
        else:
            request["no_wait"] = True
        self._open = _PullRequest(f"{self._inbox}.{self._requests}", batch, deadline)
        with _translated(f"pull from consumer {self._durable}"):
            await nc.publish(
                self._next_subject, json.dumps(request).encode(), reply=self._open.reply
            )
        await self._await_open_request()

    async def _await_open_request(self) -> None:
        loop = asyncio.get_running_loop()
        while self._open is not None:
            self._arrival.clear()
            self._sort_arrivals()
            if self._open is None:
                return
            remaining = self._open.deadline - loop.time()
            if remaining <= 0:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._arrival.wait()

    def _sort_arrivals(self) -> None:
        """Messages become undelivered work; statuses end the open request or are stale."""
        while self._arrived:
            msg = self._arrived.popleft()
            if not msg.subject.startswith(self._inbox):
                self._undelivered.append(msg)
                if self._open is not None:
                    self._open.received += 1
                    if self._open.received >= self._open.batch:
                        self._open = None
            elif self._open is not None and msg.subject == self._open.reply:
                self._end_request(msg)

    def _end_request(self, msg: Msg) -> None:
        status = _status(msg)
        if status == HEARTBEAT:
            return
        self._open = None
        if status in REQUEST_ENDED:
            return
        description = (msg.headers or {}).get(DESCRIPTION_HEADER, "")
        if status == "503":
            raise BrokerUnavailable(f"nats: consumer {self._durable}: {status} {description}")
        raise TransportError(f"nats: pull from consumer {self._durable}: {status} {description}")

    def _hand_out(self, max_messages: int) -> list[Delivery]:
        deliveries: list[Delivery] = []
        while self._undelivered and len(deliveries) < max_messages:
            delivery = NatsDelivery(self, self._undelivered.popleft())
            delivery.attempt = max(delivery.attempt, self._nacked.pop(delivery.id, 0) + 1)
            self._unacked[delivery.id] = delivery
            deliveries.append(delivery)
        return deliveries

    def settled(self, delivery: NatsDelivery, *, nacked: bool = False) -> None:
        if self._unacked.get(delivery.id) is delivery:
            del self._unacked[delivery.id]
        if nacked:
            self._nacked[delivery.id] = delivery.attempt
            while len(self._nacked) > NACK_MEMORY:
                self._nacked.popitem(last=False)

    async def close(self) -> None:
        """Give back everything this member holds, so others get it now, not after
        ``ack_wait_s``. Best effort: with the broker gone, ``ack_wait_s`` does it later."""
        if self._closed:
            return
        self._closed = True
        self.transport.forget(self)
        async with self._lock:
            try:
                await self._give_back_all()
            except (BrokerUnavailable, TransportError) as exc:
                log.warning(
                    "nats: %s/%s member %s left without giving back its messages: %s",
                    self.queue,
                    self.group,
                    self.member,
                    exc,
                )
                await self._release_inbox()

    async def _release_inbox(self) -> None:
        """Stop the callback without the server (it drops the interest on reconnect)."""
        core, self._core = self._core, None
        if core is not None:
            with contextlib.suppress(BrokerUnavailable, TransportError), _translated("unsubscribe"):
                await core.unsubscribe()

    async def _give_back_all(self) -> None:
        self.transport.client()
        if self._core is not None:
            with _translated(f"unsubscribe {self._inbox}"):
                await self._core.drain()  # type: ignore[no-untyped-call]
            self._core = None
        self._open = None  # what is left to sort is work to give back, statuses are moot
        self._sort_arrivals()
        held = [*self._unacked.values(), *self._hand_out(len(self._undelivered))]
        self._unacked.clear()
        results = await asyncio.gather(
            *(delivery.nack() for delivery in held), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]


class NatsListener(Listener):
    def __init__(self, transport: NatsJetStreamTransport, channel: str, subject: str) -> None:
        self.channel = channel
        self._transport = transport
        self._subject = subject
        self._core: CoreSubscription | None = None

    async def start(self) -> None:
        nc = self._transport.client()
        with _translated(f"listen on {self._subject}"):
            self._core = await nc.subscribe(self._subject)
            await nc.flush()

    async def _receive(self, timeout_s: float) -> bytes | None:
        from nats.errors import TimeoutError as NatsTimeout

        if self._core is None:
            raise RuntimeError("receive on a closed listener")
        with _translated(f"receive on {self._subject}"):
            try:
                msg = await self._core.next_msg(timeout=timeout_s)
            except NatsTimeout:
                return None
        return msg.data

    async def close(self) -> None:
        core, self._core = self._core, None
        self._transport.forget(self)
        if core is None:
            return
        try:
            self._transport.client()
            with _translated(f"unsubscribe {self._subject}"):
                await core.unsubscribe()
        except BrokerUnavailable:
            pass  # the server dropped the interest with the connection


class NatsSettings(BackendSettings):
    servers: str = "nats://127.0.0.1:4222"
    stream: str = "BROKER_SCHED"
    subject_prefix: str = "act"
    ack_wait_s: float = Field(default=3.0, gt=0)
    max_deliver: int = Field(default=-1)
    user: str | None = None
    password: SecretStr | None = None
    creds_file: str | None = None
    nkeys_seed_file: str | None = None
    # -- clustering: a JetStream cluster (servers lists several seeds, comma-separated)
    stream_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="replicas of the work stream and the records bucket (3 on a 3-node "
        "cluster: a node can die without losing a message); used when they are created",
    )


class NatsJetStreamTransport(Transport):
    name = "nats"
    settings_section = "nats"
    settings_model = NatsSettings
    capabilities = Capabilities(
        partitioned=False,
        rebalances=False,
        publishes_once=True,
        renews_deliveries=True,
        leases=True,
    )

    def __init__(
        self,
        *,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        stream: str = "BROKER_SCHED",
        subject_prefix: str = "act",
        ack_wait_s: float = 3.0,
        max_deliver: int = -1,
        user: str | None = None,
        password: str | None = None,
        creds_file: str | None = None,
        nkeys_seed_file: str | None = None,
        stream_replicas: int = 1,
        connect_timeout_s: float = 3.0,
        request_timeout_s: float = 5.0,
        max_message_bytes: int = 1_048_576,
    ) -> None:
        _require_nats()
        super().__init__(max_message_bytes=max_message_bytes)
        if not _STREAM_NAME.fullmatch(stream):
            raise ConfigError(f"nats stream name {stream!r} must match [A-Za-z0-9_-]+")
        if not _QUEUE_NAME.fullmatch(subject_prefix):
            raise ConfigError(f"nats subject_prefix {subject_prefix!r} is not a valid subject")
        if isinstance(servers, str):
            servers = [s.strip() for s in servers.split(",") if s.strip()]
        self.servers = list(servers)
        broker_addresses(
            "nats.servers", ",".join(self.servers), schemes=_SCHEMES, default_port=4222
        )
        _check_key_files({"nats.creds_file": creds_file, "nats.nkeys_seed_file": nkeys_seed_file})
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.ack_wait_s = ack_wait_s
        self.redelivery_window_s = ack_wait_s
        self.max_deliver = max_deliver
        self.stream_replicas = stream_replicas
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self._auth: dict[str, Any] = {
            key: value
            for key, value in {
                "user": user,
                "password": password,
                "user_credentials": creds_file,
                "nkeys_seed": nkeys_seed_file,
            }.items()
            if value is not None
        }
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._bucket: KeyValue | None = None
        self._leases: KeyValue | None = None
        self._refused = False
        self._parts: set[NatsSubscription | NatsListener] = set()
        self._last_error: Exception | None = None
        self._publishing: set[anyio.CancelScope] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        nats = settings.section(NatsSettings)
        return cls(
            servers=nats.servers,
            stream=nats.stream,
            subject_prefix=nats.subject_prefix,
            ack_wait_s=nats.ack_wait_s,
            max_deliver=nats.max_deliver,
            user=nats.user,
            password=nats.password.get_secret_value() if nats.password else None,
            creds_file=nats.creds_file,
            nkeys_seed_file=nats.nkeys_seed_file,
            stream_replicas=nats.stream_replicas,
            max_message_bytes=settings.max_payload_bytes,
        )

    # -- connection -----------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, check the server's max_payload, and make sure the stream exists."""
        if self._nc is not None and not self._nc.is_closed:
            return
        from nats.aio.client import Client

        nc = Client()
        where = ", ".join(self.servers)
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                with _translated(f"connect to {where}"):
                    await nc.connect(
                        self.servers,
                        name="broker-sched",
                        connect_timeout=max(1, round(self.connect_timeout_s)),
                        reconnect_time_wait=INITIAL_RETRY_WAIT_S,
                        max_reconnect_attempts=-1,
                        reconnect_to_server_handler=_reconnect_backoff,
                        error_cb=self._on_error,
                        disconnected_cb=self._on_disconnected,
                        reconnected_cb=self._on_reconnected,
                        **self._auth,
                    )
        except TimeoutError as exc:
            await _discard(nc)
            if self._refused:
                raise ConfigError(
                    f"nats: {where} refused the credentials: check nats.user and "
                    "nats.password (or nats.creds_file, nats.nkeys_seed_file)"
                ) from exc
            last = f" (last error: {self._last_error!r})" if self._last_error else ""
            raise BrokerUnavailable(
                f"nats: no server reachable at {where} within {self.connect_timeout_s} s{last}"
            ) from exc
        except BaseException:
            await _discard(nc)
            raise
        if nc.max_payload < self.max_message_bytes:
            await nc.close()
            raise ConfigError(
                f"nats server max_payload is {nc.max_payload} bytes, below max_payload_bytes "
                f"= {self.max_message_bytes}: raise max_payload in the nats-server config or "
                "lower max_payload_bytes"
            )
        self._nc = nc
        self._js = nc.jetstream(timeout=self.request_timeout_s)
        try:
            await self._ensure_stream()
        except BaseException:
            await self.close()
            raise

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        # The server hangs up after refusing; the reset that follows must not hide why.
        self._refused = self._refused or "authorization violation" in str(exc).lower()
        log.warning("nats: %s: %s", type(exc).__name__, exc)

    async def _on_disconnected(self) -> None:
        log.info("nats: disconnected from %s", ", ".join(self.servers))
        for publishing in self._publishing:
            publishing.cancel()

    @contextlib.contextmanager
    def _failing_on_disconnect(self, action: str) -> Iterator[None]:
        """A publish waiting for its ack when the connection drops fails at once instead
        of after ``request_timeout_s``: the ack cannot come on that connection, and the
        caller is told the same as by the timeout (the message may still be stored)."""
        with anyio.CancelScope() as publishing:
            self._publishing.add(publishing)
            try:
                yield
            finally:
                self._publishing.discard(publishing)
        if publishing.cancelled_caught:
            raise BrokerUnavailable(f"nats: {action}: connection lost before the ack")

    async def _on_reconnected(self) -> None:
        log.info("nats: reconnected")

    def client(self) -> Client:
        """The connection, or :class:`BrokerUnavailable` at once while it is down."""
        nc = self._nc
        if nc is None or nc.is_closed:
            raise BrokerUnavailable("nats: not connected")
        if not nc.is_connected:
            raise BrokerUnavailable(f"nats: connection to {', '.join(self.servers)} lost")
        return nc

    def jetstream(self) -> JetStreamContext:
        self.client()
        assert self._js is not None
        return self._js

    def forget(self, part: NatsSubscription | NatsListener) -> None:
        self._parts.discard(part)

    async def close(self) -> None:
        """Members give back their messages first; safe to call twice."""
        if self._nc is None:
            return
        await asyncio.gather(*(part.close() for part in list(self._parts)))
        nc, self._nc, self._js, self._bucket = self._nc, None, None, None
        if not nc.is_closed:
            with contextlib.suppress(BrokerUnavailable, TransportError), _translated("flush"):
                await nc.flush(timeout=1)
            await nc.close()

    async def ping(self) -> str:
        nc = self.client()
        with _translated("ping"):
            account = await self.jetstream().account_info()
        version = nc.connected_server_version
        where = nc.connected_url.netloc if nc.connected_url else ", ".join(self.servers)
        return (
            f"nats {version.major}.{version.minor}.{version.patch} at {where} "
            f"(jetstream on, {account.streams} streams)"
        )

    # -- queues ---------------------------------------------------------------------

    async def declare(self, queue: str, partitions: int = 1) -> None:
        queue_subject(self.subject_prefix, queue)
        await self._ensure_stream()

    async def _ensure_stream(self) -> None:
        """Create the stream if missing; an existing one (even configured differently by
        an operator) is used as it is. It is looked up first: on a cluster a create goes
        through the meta leader even when the stream exists, and is much slower."""
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig
        from nats.js.errors import BadRequestError, NotFoundError

        js = self.jetstream()
        with _translated(f"look up stream {self.stream}"), contextlib.suppress(NotFoundError):
            await js.stream_info(self.stream)
            return
        config = StreamConfig(
            name=self.stream,
            subjects=[f"{self.subject_prefix}.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            num_replicas=self.stream_replicas,
        )
        with _translated(f"create stream {self.stream}"):
            try:
                await js.add_stream(config)
            except BadRequestError as exc:
                if exc.err_code != STREAM_NAME_IN_USE:
                    raise
                log.debug("nats: using existing stream %s as configured: %s", self.stream, exc)

    async def _publish(self, queue: str, body: bytes, key: str | None) -> None:
        from nats.errors import MaxPayloadError

        subject = queue_subject(self.subject_prefix, queue)
        nc = self.client()
        action = f"publish to {subject}"
        with self._failing_on_disconnect(action), _translated(action):
            try:
                await self.jetstream().publish(subject, body)
            except MaxPayloadError as exc:
                raise PayloadTooLarge(len(body), nc.max_payload) from exc

    async def _publish_once(self, queue: str, body: bytes, key: str) -> bool:
        from nats.errors import MaxPayloadError

        subject = queue_subject(self.subject_prefix, queue)
        js = self.jetstream()
        action = f"publish {key} once to {subject}"
        with self._failing_on_disconnect(action), _translated(action):
            try:
                ack = await js.publish(subject, body, headers={MSG_ID_HEADER: key})
            except MaxPayloadError as exc:
                raise PayloadTooLarge(len(body), self.max_message_bytes) from exc
        return not ack.duplicate

    async def subscribe(self, queue: str, group: str, member: str) -> Subscription:
        durable = await self._ensure_consumer(queue, group)
        subscription = NatsSubscription(self, queue, group, member, durable)
        await subscription.start()
        self._parts.add(subscription)
        return subscription

    async def _ensure_consumer(self, queue: str, group: str) -> str:
        """Create the group's durable consumer, or update it to the current settings."""
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import BadRequestError

        subject = queue_subject(self.subject_prefix, queue)
        durable = consumer_name(queue, group)
        config = ConsumerConfig(
            name=durable,
            durable_name=durable,
            description=f"broker-sched group {group!r} on queue {queue!r}",
            filter_subject=subject,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver,
            max_ack_pending=MAX_ACK_PENDING,
        )
        js = self.jetstream()
        with _translated(f"create consumer {durable} for {subject}"):
            try:
                await js.add_consumer(self.stream, config)
            except BadRequestError as exc:
                if exc.err_code == NOT_UNIQUE_ON_WORKQUEUE:
                    raise TransportError(
                        f"nats: queue {queue!r} already has another group; the WorkQueue "
                        f"stream {self.stream} allows one group per queue"
                    ) from exc
                raise
        return durable

    async def backlog(self, queue: str, group: str) -> Backlog:
        [backlog] = await self.backlogs([(queue, group)])
        return backlog

    async def backlogs(self, pairs: Sequence[tuple[str, str]]) -> list[Backlog]:
        """One stream-info request for every queue's stored count (WorkQueue retention
        keeps exactly the unacked messages), then one consumer-info request for each
        queue that holds any, all at once: idle queues, the many, cost nothing more.

        ``appended`` comes from the consumer's delivered sequence plus its pending count
        (a redelivery counts as an arrival), or the stored count for a queue no group
        consumed yet; an empty queue's is unknown (None) without asking its consumer.
        """
        subjects = [queue_subject(self.subject_prefix, queue) for queue, _ in pairs]
        if not pairs:
            return []
        with _translated("backlog"):
            stored = await self._stored(set(subjects))
            busy = [i for i, subject in enumerate(subjects) if stored.get(subject, 0)]
            infos = await asyncio.gather(*(self._consumer_info(*pairs[i]) for i in busy))
        backlogs = [Backlog(pending=0, in_flight=0) for _ in pairs]
        for index, info in zip(busy, infos, strict=True):
            count = stored[subjects[index]]
            if info is None:
                backlogs[index] = Backlog(pending=count, in_flight=0, appended=count)
                continue
            pending = info.num_pending or 0
            delivered = info.delivered.consumer_seq if info.delivered is not None else None
            backlogs[index] = Backlog(
                pending=pending,
                in_flight=info.num_ack_pending or 0,
                appended=None if delivered is None else pending + delivered,
            )
        return backlogs

    async def _consumer_info(self, queue: str, group: str) -> ConsumerInfo | None:
        from nats.js.errors import NotFoundError

        try:
            info: ConsumerInfo = await self.jetstream().consumer_info(
                self.stream, consumer_name(queue, group)
            )
        except NotFoundError:
            return None
        return info

    async def _stored(self, subjects: set[str]) -> dict[str, int]:
        """Messages stored per subject: with WorkQueue retention, all not yet acked."""
        from nats.js.errors import NotFoundError

        wanted = next(iter(subjects)) if len(subjects) == 1 else f"{self.subject_prefix}.>"
        try:
            info = await self.jetstream().stream_info(self.stream, subjects_filter=wanted)
        except NotFoundError:
            return {}
        return info.state.subjects or {}

    async def delete(self, queue: str) -> None:
        """Delete the queue's consumers and purge its messages; the stream stays."""
        from nats.js.errors import NotFoundError

        subject = queue_subject(self.subject_prefix, queue)
        js = self.jetstream()
        with _translated(f"delete {subject}"):
            try:
                for durable in await self._consumers_of(queue):
                    with contextlib.suppress(NotFoundError):
                        await js.delete_consumer(self.stream, durable)
                await js.purge_stream(self.stream, subject=subject)
            except NotFoundError:
                return

    async def _consumers_of(self, queue: str) -> list[str]:
        """Durable names of ``queue``'s groups. Names carry the queue, so only candidates
        are looked at: listing every consumer's full info per delete is quadratic."""
        from nats.js.errors import NotFoundError

        subject = queue_subject(self.subject_prefix, queue)
        prefix = _consumer_prefix(queue)[:MAX_READABLE_NAME]
        js = self.jetstream()
        found: list[str] = []
        for name in await self._consumer_names():
            if name.startswith(prefix):
                with contextlib.suppress(NotFoundError):
                    info = await js.consumer_info(self.stream, name)
                    if info.config.filter_subject == subject:
                        found.append(name)
        return found

    async def _consumer_names(self) -> list[str]:
        """All consumer names of the stream, page by page (nats-py has no call for it)."""
        from nats.js.errors import APIError

        nc = self.client()
        names: list[str] = []
        while True:
            request = json.dumps({"offset": len(names)}).encode()
            reply = await nc.request(
                f"$JS.API.CONSUMER.NAMES.{self.stream}", request, timeout=self.request_timeout_s
            )
            page = json.loads(reply.data)
            if "error" in page:
                raise APIError.from_error(page["error"])
            names += page.get("consumers") or []
            if not page.get("consumers") or len(names) >= page.get("total", 0):
                return names

    # -- records --------------------------------------------------------------------

    async def _records(self, ttl_s: float | None) -> KeyValue | None:
        """The records bucket; created (with ``ttl_s``) only by a put."""
        from nats.js.errors import BucketNotFoundError

        if self._bucket is not None:
            return self._bucket
        js = self.jetstream()
        name = f"{self.stream}_RECORDS"
        with _translated(f"records bucket {name}"):
            try:
                self._bucket = await js.key_value(name)
            except BucketNotFoundError:
                if ttl_s is None:
                    return None
                self._bucket = await js.create_key_value(
                    bucket=name, ttl=ttl_s, history=1, replicas=self.stream_replicas
                )
        return self._bucket

    # -- leases ---------------------------------------------------------------------

    async def _lease_bucket(self, ttl_s: float | None) -> KeyValue | None:
        """The leases bucket: a KV whose entries expire ``ttl_s`` after their last write
        (the bucket's max age; this server has no per-message ttl), created by the first
        take. A bucket made with another ttl is refused: a holder that believed its
        lease outlived the broker's expiry could act beside the next holder."""
        from nats.js.errors import BucketNotFoundError

        if self._leases is not None:
            return self._leases
        js = self.jetstream()
        name = f"{self.stream}_LEASES"
        with _translated(f"leases bucket {name}"):
            try:
                bucket = await js.key_value(name)
            except BucketNotFoundError:
                if ttl_s is None:
                    return None
                bucket = await js.create_key_value(
                    bucket=name, ttl=ttl_s, history=1, replicas=self.stream_replicas
                )
            if ttl_s is not None:
                kept_s = (await js.stream_info(f"KV_{name}")).config.max_age
                if kept_s is not None and abs(kept_s - ttl_s) > 0.001:
                    raise TransportError(
                        f"nats: the leases bucket {name} expires leases after {kept_s} s, "
                        f"not {ttl_s} s: every controller needs the same lease ttl "
                        f"(or delete the bucket)"
                    )
        self._leases = bucket
        return bucket

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> int | None:
        """Compare-and-set on the KV: ``create`` takes a free lease, ``update`` with the
        last revision renews one's own; the token is the write's revision (a stream
        sequence, so it grows across every holder). Expiry is the bucket's max age."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        bucket = await self._lease_bucket(ttl_s)
        assert bucket is not None
        mine = holder.encode()
        with _translated(f"lease {name}"):
            try:
                revision: int = await bucket.create(name, mine)
                return revision
            except KeyWrongLastSequenceError:
                pass
            except KeyNotFoundError:
                return None  # nats-py's create looked the key up as it expired: next round
            try:
                entry = await bucket.get(name)
            except KeyNotFoundError:
                return None  # expired or released just now: the next call takes it
            if entry.value != mine or entry.revision is None:
                return None
            try:
                revision = await bucket.update(name, mine, last=entry.revision)
            except KeyWrongLastSequenceError:
                return None
            return revision

    async def release_lease(self, name: str, holder: str) -> None:
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        bucket = await self._lease_bucket(None)
        if bucket is None:
            return
        with _translated(f"release lease {name}"):
            try:
                entry = await bucket.get(name)
                if entry.value == holder.encode():
                    await bucket.delete(name, last=entry.revision)
            except (KeyNotFoundError, KeyWrongLastSequenceError):
                return

    async def put_record(self, scope: str, key: str, body: bytes, ttl_s: float) -> None:
        bucket = await self._records(ttl_s)
        assert bucket is not None
        expiry_ms = int((time.time() + ttl_s) * 1000)
        with _translated(f"put record {scope}/{key}"):
            await bucket.put(f"{scope}.{key}", b"%d\n" % expiry_ms + body)

    async def record_reply_and_ack(
        self, delivery: Delivery, record: Record, channel: str = ""
    ) -> None:
        """The reply first: the client only buffers it, and it leaves with the KV put's
        request, so the two overlap with no task beside them; the ack once the server
        confirmed the put."""
        if channel:
            await self.send(channel, record.body)
        await self.put_record(record.scope, record.key, record.body, record.ttl_s)
        await delivery.ack()

    async def get_record(self, scope: str, key: str) -> bytes | None:
        from nats.js.errors import KeyNotFoundError

        bucket = await self._records(None)
        if bucket is None:
            return None
        with _translated(f"get record {scope}/{key}"):
            try:
                entry = await bucket.get(f"{scope}.{key}")
            except KeyNotFoundError:
                return None
        expiry, _, body = (entry.value or b"").partition(b"\n")
        return body if expiry.isdigit() and int(expiry) > time.time() * 1000 else None

    async def recent_records(self, scope: str, limit: int) -> list[bytes]:
        bucket = await self._records(None)
        if bucket is None or limit <= 0:
            return []
        with _translated(f"records of {scope}"):
            keys = await self._record_keys(f"{scope}.>")
        newest = sorted(keys, reverse=True)[:limit]
        bodies = await asyncio.gather(
            *(self.get_record(scope, name.partition(".")[2]) for name in newest)
        )
        return [body for body in bodies if body is not None]

    async def _record_keys(self, pattern: str) -> list[str]:
        """The records' keys matching ``pattern``, from the bucket stream's subject
        counts, page by page.

        Not a KV watch (``KeyValue.keys``): a watch ends at a marker that nats-py can
        place before the entries already delivered when the client is slow, and then
        lists nothing for a bucket full of records.
        """
        from nats.js.errors import APIError

        stream = f"KV_{self.stream}_RECORDS"
        subject_prefix = f"$KV.{self.stream}_RECORDS."
        nc = self.client()
        keys: list[str] = []
        while True:
            request = {"subjects_filter": subject_prefix + pattern, "offset": len(keys)}
            reply = await nc.request(
                f"$JS.API.STREAM.INFO.{stream}",
                json.dumps(request).encode(),
                timeout=self.request_timeout_s,
            )
            page = json.loads(reply.data)
            if "error" in page:
                raise APIError.from_error(page["error"])
            subjects = (page.get("state") or {}).get("subjects") or {}
            keys += [subject.removeprefix(subject_prefix) for subject in subjects]
            if not subjects or len(keys) >= page.get("total", 0):
                return keys

    # -- channels -------------------------------------------------------------------

    async def send(self, channel: str, body: bytes) -> None:
        from nats.errors import MaxPayloadError

        subject = channel_subject(self.subject_prefix, channel)
        nc = self.client()
        with _translated(f"send on {subject}"):
            try:
                await nc.publish(subject, body)
            except MaxPayloadError as exc:
                raise PayloadTooLarge(len(body), nc.max_payload) from exc

    async def listen(self, channel: str) -> Listener:
        listener = NatsListener(self, channel, channel_subject(self.subject_prefix, channel))
        await listener.start()
        self._parts.add(listener)
        return listener
