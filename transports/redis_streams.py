"""Redis Streams transport (redis-py asyncio): a stream per action queue, a group per action.

Features
    * queue = stream ``bs:q:{queue}``; group = XREADGROUP consumer group, created at id
      ``0`` with MKSTREAM so a group that subscribes late still gets earlier entries; any
      number of members share a group with no rebalance (``resize`` is a no-op,
      ``max_consumers`` is ``None``).
    * ``fetch``: one Lua call first reclaims entries idle for ``claim_min_idle_ms``
      (XAUTOCLAIM, any member's: a vanished member's work and nacked work come back this
      way) and then reads new ones (XREADGROUP ``>``); only when both are empty does it
      block (XREADGROUP BLOCK ≤ ``block_ms`` and ≤ the fetch timeout) on a second client
      whose socket timeout is longer than any BLOCK (redis-py's 5 s default would break
      it). The Lua call goes through the coalesced pipelines (below), so many members'
      calls share a round trip; measured, that costs less than going straight to the
      blocking read, which is one command of its own per fetch. ``Delivery.id`` is the
      entry id, which stays the same across redeliveries; ``attempt`` is the group's
      delivery count for the entry.
    * ``record_reply_and_ack``: one Lua script puts the record and then acks, so Redis
      applies both together and writes them to the append-only file as one transaction
      (a script's effects are replicated wrapped in MULTI/EXEC); the reply's PUBLISH
      follows in the same pipeline. A broker killed at any point keeps either the
      record and the ack or neither (the work is then redelivered), and a lost PUBLISH
      costs the caller only a record read. A group deleted meanwhile still gets its
      record. ``reply_and_ack`` (the reply's PUBLISH, then the ack, in one pipeline)
      stays for the bare floor of ``bench overhead``.
    * hot-path commands (XADD, PUBLISH, ack, the fetch script) from concurrent callers
      are coalesced: those issued while a pipeline is on the wire go together in the next
      one (at most ``PIPELINES_IN_FLIGHT`` at once). redis-py spends far more CPU per
      command (connection checkout, retry and timeout wrappers, metrics) than Redis does,
      so per-command overhead, not the network, is what bounds a busy client.
    * ``ack``: XACK, then XDEL when the group is the stream's only group, so a work queue
      holds only unfinished entries. Deleting can make XINFO GROUPS ``lag`` NULL (acking
      the last-delivered entry while an older one is unacked leaves a tombstone Redis
      cannot count past); ``backlog`` then counts XLEN - PEL, exact while acked entries
      are deleted.
    * ``nack(delay_s)``: the entry is handed, inside Redis, to the group's parking consumer
      ``bs:returned`` with its idle time set to ``claim_min_idle_ms - delay_s`` (XCLAIM
      IDLE JUSTID), so any member's next fetch reclaims it once ``delay_s`` has passed.
      Nothing is copied and no timer runs in this process: the message cannot be lost if
      the process dies during the delay.
    * ``in_progress``: resets the entry's idle time, so a long run is not reclaimed.
    * subscription ``close``: every entry the member still holds is handed to
      ``bs:returned``, claimable at once, and only then is the member deleted
      (XGROUP DELCONSUMER drops a member's pending entries with it).
    * ``backlog``: one Lua call per 50 queues, all calls of ``backlogs`` in one pipeline
      round trip (measured on a loaded 2-core host, Redis 7.0: about 10 µs per idle queue
      and 20 µs per busy one, for 200 or 1 000 queues). pending = undelivered (``lag``,
      or XLEN - PEL when NULL) + parked entries + entries of other members idle past
      ``claim_min_idle_ms`` (the next fetch takes them); in_flight = the rest of the PEL.
      A missing group counts the whole stream as pending; a missing stream counts zero.
      ``oldest_age_s`` is the age of the oldest of these pending entries (server clock).
    * channels: Redis pub/sub on ``bs:c:{channel}``; ``listen`` returns after the server
      confirmed the subscription.
    * ``publish_once``: one Lua call sets a marker key ``bs:moved:{<stream>}:<id>``
      (``SET NX``, expiring after ``migration.move_marker_ttl_s``, a week by default) and
      appends the entry only if the marker was new: exact for as long as the marker lives.
    * records: a string ``bs:r:{scope}:{key}`` with a TTL (SET EX), and per scope an
      index ``bs:ri:{scope}``, a sorted set of keys scored by expiry, trimmed as records
      are put; a listing reads the index by expiry, latest first (key order when the
      records share one ttl, as activation records do) and MGETs, skipping expired keys.

Connection settings (``[redis]``): ``url`` (``redis://``, ``rediss://`` for TLS,
``unix://``), ``username``, ``password`` (Redis ACL users). Connecting gives up after
3 s; a lost connection is retried twice with jittered backoff, then every client error
surfaces as :class:`BrokerUnavailable`. Two connection pools per transport: up to 64
connections for commands and 4 096 for blocking reads and listeners (one each while they
wait); a caller beyond that waits up to 5 s for a free connection.

Replicated (``sentinels``, ``sentinel_master``, ``sentinel_password``): the clients ask
the Sentinels (redis-py's ``Sentinel``) for the master and ask again when a connection to
it fails, so after a failover the next call reaches the promoted replica; ``url`` then
gives only the database, the credentials and TLS. Replication is asynchronous: an entry
the master acknowledged but had not yet sent to the replica is gone after a failover
(docs/reliability.md measures how often).

Options (``[redis]``): ``claim_min_idle_ms`` (default 3 000, a few of the heartbeats on
which an invoker renews what it runs: how long an unacked entry of a member that
vanished waits before another member takes it; also the longest nack
delay), ``block_ms`` (default 1 000: the longest single BLOCK, which bounds how late an
idle member notices nacked or reclaimable work), ``maxlen`` (approximate ``MAXLEN ~`` cap
on each stream; off by default).

Known limits
    * needs Redis ≥ 7.0 (``lag`` in XINFO GROUPS, XAUTOCLAIM that drops deleted entries).
    * ``nack`` delays longer than ``claim_min_idle_ms`` are cut to it: Redis cannot set an
      entry's delivery time in the future.
    * a member blocked in XREADGROUP sees nacked or reclaimable entries only when its BLOCK
      ends (≤ ``block_ms``); new entries wake it at once.
    * with ``maxlen`` set, trimming can drop entries nobody has finished: use it as a
      memory cap, not as flow control. Trimmed entries still in a PEL count as in flight
      until a fetch's XAUTOCLAIM discards them.
    * several groups on one queue work, but then acked entries are kept (no XDEL) and only
      ``maxlen`` bounds the stream; when ``lag`` is NULL with several groups, ``pending``
      is an estimate.
    * ``publish`` retried after a lost connection may append twice (at-least-once).
    * members that vanish stay listed (empty) in XINFO CONSUMERS.
    * a fetch cancelled during its blocking read may leave entries the server already
      handed to the member; they come back at ``close`` or after ``claim_min_idle_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast
from urllib.parse import urlsplit

from pydantic import Field, SecretStr

from broker_sched.errors import (
    BrokerUnavailable,
    ConfigError,
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
    from redis.asyncio import ConnectionPool, Redis
    from redis.asyncio.client import PubSub
    from redis.asyncio.sentinel import Sentinel
    from redis.commands.core import AsyncScript

    from broker_sched.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

QUEUE_PREFIX = "bs:q:"
CHANNEL_PREFIX = "bs:c:"
CREDENTIAL_SETTINGS = "check the settings redis.username and redis.password"
RECORD_PREFIX = "bs:r:"
RECORD_INDEX_PREFIX = "bs:ri:"
LEASE_PREFIX = "bs:lease:"
LEASE_TOKEN_PREFIX = "bs:lease-token:"
MARKER_PREFIX = "bs:moved:"
"""Markers of ids :meth:`RedisStreamsTransport.publish_once` has appended."""
RETURNED = "bs:returned"
"""The consumer that holds nacked and released entries until a member reclaims them."""
BODY_FIELD = b"b"
MIN_SERVER_VERSION = (7, 0)
CONNECT_TIMEOUT_S = 3.0
COMMAND_TIMEOUT_S = 5.0
RECONNECT_RETRIES = 2
COMMAND_CONNECTIONS = 64
WAITING_CONNECTIONS = 4_096
"""Blocking reads and channel listeners at once, per transport (connections open on demand)."""
BACKLOG_CHUNK = 50
PIPELINES_IN_FLIGHT = 2
"""Coalesced pipelines on the wire at once, per transport: one fills while one is out."""
STUCK_SCAN_LIMIT = 1_000
"""At most this many PEL entries are examined per backlog call to find reclaimable ones."""


def stream_key(queue: str) -> str:
    return f"{QUEUE_PREFIX}{queue}"


def channel_key(channel: str) -> str:
    return f"{CHANNEL_PREFIX}{channel}"


class RedisSettings(BackendSettings):
    url: str = "redis://127.0.0.1:6379/0"
    username: str | None = None
    password: SecretStr | None = None
    maxlen: int | None = Field(default=None, ge=1)
    claim_min_idle_ms: int = Field(default=3_000, ge=1)
    block_ms: int = Field(default=1_000, ge=1)
    # -- clustering: a master with replicas, found through Redis Sentinel
    sentinels: str | None = Field(
        default=None,
        description="comma-separated host:port of Sentinels; set, the master is asked of "
        "them (and again after a failover) and url gives only the database and TLS",
    )
    sentinel_master: str = Field(
        default="broker-sched", description="the master's name the Sentinels monitor"
    )
    sentinel_password: SecretStr | None = Field(
        default=None, description="password of the Sentinels themselves, if they have one"
    )


class RedisStreamsTransport(Transport):
    name = "redis"
    settings_section = "redis"
    settings_model = RedisSettings
    capabilities = Capabilities(
        partitioned=False,
        rebalances=False,
        publishes_once=True,
        renews_deliveries=True,
        leases=True,
    )

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        username: str | None = None,
        password: str | None = None,
        maxlen: int | None = None,
        claim_min_idle_ms: int = 3_000,
        block_ms: int = 1_000,
        max_message_bytes: int = 1_048_576,
        once_ttl_s: int = 604_800,
        sentinels: Sequence[tuple[str, int]] = (),
        sentinel_master: str = "broker-sched",
        sentinel_password: str | None = None,
    ) -> None:
        super().__init__(max_message_bytes=max_message_bytes)
        _check_url(url)
        try:
            from redis.asyncio import BlockingConnectionPool, Redis
            from redis.asyncio.retry import Retry
            from redis.backoff import ExponentialWithJitterBackoff
        except ImportError as exc:
            raise TransportNotInstalled("redis", "redis") from exc
        self.maxlen = maxlen
        self.claim_min_idle_ms = claim_min_idle_ms
        self.redelivery_window_s = claim_min_idle_ms / 1000
        self.block_ms = block_ms
        self.once_ttl_s = once_ttl_s

        self._sentinel = _sentinel(sentinels, sentinel_password) if sentinels else None

        def client(socket_timeout_s: float, max_connections: int) -> Redis:
            """A client whose pool makes callers wait for a free connection (redis-py's
            default pool fails at once beyond 100)."""
            options: dict[str, Any] = {
                "username": username,
                "password": password,
                "max_connections": max_connections,
                "timeout": COMMAND_TIMEOUT_S,
                "socket_connect_timeout": CONNECT_TIMEOUT_S,
                "socket_timeout": socket_timeout_s,
                "retry": Retry(
                    ExponentialWithJitterBackoff(base=0.05, cap=1.0), retries=RECONNECT_RETRIES
                ),
            }
            if self._sentinel is not None:
                pool = _master_pool(url, self._sentinel, sentinel_master, options)
                return Redis.from_pool(pool)
            return Redis.from_pool(BlockingConnectionPool.from_url(url, **options))

        self._commands = client(COMMAND_TIMEOUT_S, COMMAND_CONNECTIONS)
        # Blocking reads and pub/sub hold a connection each while they wait on the server;
        # BLOCK and get_message's timeout end them, the socket timeout only catches a dead
        # server and must outlast the longest BLOCK.
        self.blocking = client(block_ms / 1000 + COMMAND_TIMEOUT_S, WAITING_CONNECTIONS)
        self.scripts = _Scripts(self._commands)
        self.hot = _Coalescer(self._commands, PIPELINES_IN_FLIGHT)
        self.subscriptions: set[RedisSubscription] = set()
        self.listeners: set[RedisListener] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        redis = settings.section(RedisSettings)
        return cls(
            redis.url,
            username=redis.username,
            password=redis.password.get_secret_value() if redis.password else None,
            maxlen=redis.maxlen,
            claim_min_idle_ms=redis.claim_min_idle_ms,
            block_ms=redis.block_ms,
            max_message_bytes=settings.max_payload_bytes,
            once_ttl_s=settings.migration.move_marker_ttl_s,
            sentinels=(
                broker_addresses("redis.sentinels", redis.sentinels) if redis.sentinels else []
            ),
            sentinel_master=redis.sentinel_master,
            sentinel_password=(
                redis.sentinel_password.get_secret_value() if redis.sentinel_password else None
            ),
        )

    async def connect(self) -> None:
        version = await self._server_version()
        found = tuple(int(part) for part in version.split(".")[:2])
        if found < MIN_SERVER_VERSION:
            raise TransportError(f"the redis transport needs Redis >= 7.0, found {version}")

    async def close(self) -> None:
        """Release this client's work to other members, then disconnect; a broker that is
        already gone only delays redelivery to ``claim_min_idle_ms``."""
        try:
            for subscription in list(self.subscriptions):
                try:
                    await subscription.close()
                except BrokerUnavailable as exc:
                    log.warning("redis: %s left without releasing: %s", subscription.member, exc)
            for listener in list(self.listeners):
                await listener.close()
        finally:
            await self.hot.close()
            await self.blocking.aclose()
            await self._commands.aclose()
            for sentinel in self._sentinel.sentinels if self._sentinel is not None else []:
                await sentinel.aclose()

    async def ping(self) -> str:
        version = await self._server_version()
        pool = self._commands.connection_pool
        where = pool.connection_kwargs
        location = where.get("path") or f"{where.get('host')}:{where.get('port')}"
        master = getattr(pool, "master_address", None)
        if master is not None:  # found through the Sentinels
            location = f"{master[0]}:{master[1]} (master {getattr(pool, 'service_name', '')})"
        return f"redis {version} at {location}"

    async def _server_version(self) -> str:
        with translated("INFO server"):
            info = await self._commands.info("server")
        return str(info["redis_version"])

    async def declare(self, queue: str, partitions: int = 1) -> None:
        with translated(f"declare {queue}"):
            await self.scripts.declare([stream_key(queue)], [RETURNED])

    async def _publish(self, queue: str, body: bytes, key: str | None) -> None:
        trim = () if self.maxlen is None else ("MAXLEN", "~", self.maxlen)
        with translated(f"XADD {queue}"):
            await self.hot.run(("XADD", stream_key(queue), *trim, "*", BODY_FIELD, body))

    async def _publish_once(self, queue: str, body: bytes, key: str) -> bool:
        stream = stream_key(queue)
        marker = f"{MARKER_PREFIX}{{{stream}}}:{key}"
        with translated(f"publish {key} once to {queue}"):
            appended = await self.eval_hot(
                self.scripts.publish_once,
                [marker, stream],
                [self.once_ttl_s, BODY_FIELD, body, self.maxlen or ""],
            )
        return bool(appended)

    async def subscribe(self, queue: str, group: str, member: str) -> RedisSubscription:
        if member == RETURNED:
            raise ValueError(f"member name {RETURNED!r} is reserved")
        await self.create_group(queue, group)
        subscription = RedisSubscription(self, queue, group, member)
        self.subscriptions.add(subscription)
        return subscription

    async def create_group(self, queue: str, group: str) -> None:
        """Create ``group`` at the start of the stream (so it sees earlier entries)."""
        from redis.exceptions import ResponseError

        with translated(f"XGROUP CREATE {queue} {group}"):
            try:
                await self._commands.xgroup_create(stream_key(queue), group, id="0", mkstream=True)
            except ResponseError as exc:
                if not str(exc).startswith("BUSYGROUP"):
                    raise

    async def backlog(self, queue: str, group: str) -> Backlog:
        [backlog] = await self.backlogs([(queue, group)])
        return backlog

    async def backlogs(self, pairs: Sequence[tuple[str, str]]) -> list[Backlog]:
        """All counts in one round trip; if Redis lost the script (restart, SCRIPT FLUSH),
        it is loaded again and the batch repeated once."""
        from redis.exceptions import NoScriptError

        if not pairs:
            return []
        with translated(f"backlog of {len(pairs)} queues"):
            try:
                replies = await self._backlog_batch(pairs)
            except NoScriptError:
                await self.scripts.load_backlog()
                replies = await self._backlog_batch(pairs)
        return [
            Backlog(
                pending=int(pending),
                in_flight=int(in_flight),
                oldest_age_s=None if age_ms < 0 else age_ms / 1000,
                appended=None if added < 0 else int(added),
            )
            for pending, in_flight, age_ms, added in zip(*[iter(replies)] * 4, strict=True)
        ]

    async def _backlog_batch(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        """One script call per ``BACKLOG_CHUNK`` queues, all calls in one pipeline: a call's
        own overhead costs more than an idle queue, and a chunk holds Redis under a ms."""
        async with self._commands.pipeline(transaction=False) as pipe:
            for start in range(0, len(pairs), BACKLOG_CHUNK):
                chunk = pairs[start : start + BACKLOG_CHUNK]
                keys = [stream_key(queue) for queue, _ in chunk]
                args = [RETURNED, str(self.claim_min_idle_ms), str(STUCK_SCAN_LIMIT)]
                args.extend(group for _, group in chunk)
                pipe.evalsha(self.scripts.backlog.sha, len(keys), *keys, *args)
            replies: list[list[int]] = await pipe.execute()
        return [value for reply in replies for value in reply]

    async def delete(self, queue: str) -> None:
        with translated(f"DEL {queue}"):
            await self._commands.delete(stream_key(queue))

    async def acquire_lease(self, name: str, holder: str, ttl_s: float) -> int | None:
        """One script: renew, or ``SET NX PX`` with the next token of the lease's
        counter (see ``LEASE_LUA``); the expiry is Redis's, and a replica promoted by
        Sentinel may not have the last take (replication is asynchronous)."""
        keys = [f"{LEASE_PREFIX}{name}", f"{LEASE_TOKEN_PREFIX}{name}"]
        with translated(f"lease {name}"):
            ttl_ms = max(1, int(ttl_s * 1000))
            token = int(await self.eval_hot(self.scripts.lease, keys, [holder, ttl_ms]))
        return None if token < 0 else token

    async def release_lease(self, name: str, holder: str) -> None:
        with translated(f"release lease {name}"):
            await self.eval_hot(self.scripts.release_lease, [f"{LEASE_PREFIX}{name}"], [holder])

    async def put_record(self, scope: str, key: str, body: bytes, ttl_s: float) -> None:
        now_ms = int(time.time() * 1000)
        ttl_ms = max(1, int(ttl_s * 1000))
        index = RECORD_INDEX_PREFIX + scope
        with translated(f"SET record {scope}/{key}"):
            async with self._commands.pipeline(transaction=False) as pipe:
                pipe.set(f"{RECORD_PREFIX}{scope}:{key}", body, px=ttl_ms)
                pipe.zadd(index, {key: now_ms + ttl_ms})
                pipe.zremrangebyscore(index, "-inf", now_ms)
                # The index lives as long as its longest-lived record, never shorter.
                pipe.pexpire(index, ttl_ms, nx=True)
                pipe.pexpire(index, ttl_ms, gt=True)
                await pipe.execute()

    async def get_record(self, scope: str, key: str) -> bytes | None:
        with translated(f"GET record {scope}/{key}"):
            body = await self._commands.get(f"{RECORD_PREFIX}{scope}:{key}")
        return cast("bytes | None", body)

    async def recent_records(self, scope: str, limit: int) -> list[bytes]:
        if limit <= 0:
            return []
        with translated(f"records of {scope}"):
            keys = await self._commands.zrevrange(RECORD_INDEX_PREFIX + scope, 0, limit - 1)
            if not keys:
                return []
            names = [f"{RECORD_PREFIX}{scope}:{cast(bytes, k).decode()}" for k in keys]
            bodies = cast("list[bytes | None]", await self._commands.mget(names))
        return [body for body in bodies if body is not None]

    async def send(self, channel: str, body: bytes) -> None:
        with translated(f"PUBLISH {channel}"):
            await self.hot.run(("PUBLISH", channel_key(channel), body))

    async def reply_and_ack(self, delivery: Delivery, channel: str, body: bytes) -> None:
        """PUBLISH then the ack script, in one pipeline (see the module's notes)."""
        if not isinstance(delivery, RedisDelivery):
            await super().reply_and_ack(delivery, channel, body)
            return
        subscription = delivery.subscription
        where = f"{subscription.queue}/{subscription.group}"
        with translated(f"reply and ack {where}"), _group_may_be_gone():
            await self.eval_hot(
                self.scripts.ack,
                [subscription.key],
                [subscription.group, delivery.id],
                before=("PUBLISH", channel_key(channel), body),
            )

    async def record_reply_and_ack(
        self, delivery: Delivery, record: Record, channel: str = ""
    ) -> None:
        """The record and the ack in one script, then the PUBLISH, in one pipeline (see
        the module's notes)."""
        if not isinstance(delivery, RedisDelivery):
            await super().record_reply_and_ack(delivery, record, channel)
            return
        subscription = delivery.subscription
        now_ms = int(time.time() * 1000)
        ttl_ms = max(1, int(record.ttl_s * 1000))
        keys = [
            f"{RECORD_PREFIX}{record.scope}:{record.key}",
            RECORD_INDEX_PREFIX + record.scope,
            subscription.key,
        ]
        args = [record.body, ttl_ms, now_ms + ttl_ms, record.key, now_ms]
        args += [subscription.group, delivery.id]
        publish = ("PUBLISH", channel_key(channel), record.body) if channel else None
        where = f"{subscription.queue}/{subscription.group}"
        with translated(f"record and ack {where}"), _group_may_be_gone():
            await self.eval_hot(self.scripts.record_ack, keys, args, after=publish)

    async def eval_hot(
        self,
        script: AsyncScript,
        keys: list[str],
        args: list[Any],
        *,
        before: tuple[Any, ...] | None = None,
        after: tuple[Any, ...] | None = None,
    ) -> Any:
        """Run ``script`` through the coalesced pipelines, between ``before`` and
        ``after`` if given, and return its reply; a script Redis lost (restart, SCRIPT
        FLUSH) is loaded again and run alone."""
        from redis.exceptions import NoScriptError

        call = ("EVALSHA", script.sha, len(keys), *keys, *args)
        commands = tuple(c for c in (before, call, after) if c is not None)
        try:
            replies = await self.hot.run(*commands)
        except NoScriptError:
            script.sha = await self._commands.script_load(script.script)
            replies = await self.hot.run(("EVALSHA", script.sha, len(keys), *keys, *args))
            return replies[-1]
        return replies[0 if before is None else 1]

    async def listen(self, channel: str) -> RedisListener:
        """Subscribe and wait for the server's confirmation, so nothing sent after this
        returns is missed."""
        pubsub = self.blocking.pubsub()
        try:
            with translated(f"SUBSCRIBE {channel}"):
                await pubsub.subscribe(channel_key(channel))
                async with asyncio.timeout(COMMAND_TIMEOUT_S):
                    while True:
                        reply = await pubsub.get_message(timeout=COMMAND_TIMEOUT_S)
                        if reply is not None and reply["type"] == "subscribe":
                            break
        except TimeoutError as exc:
            await _close(pubsub)
            raise BrokerUnavailable(f"redis: no confirmation of SUBSCRIBE {channel}") from exc
        except BaseException:
            await _close(pubsub)
            raise
        listener = RedisListener(self, pubsub, channel)
        self.listeners.add(listener)
        return listener


class RedisSubscription(Subscription):
    def __init__(
        self, transport: RedisStreamsTransport, queue: str, group: str, member: str
    ) -> None:
        self.queue, self.group, self.member = queue, group, member
        self._transport = transport
        self.key = stream_key(queue)
        self._cursor: bytes | str = "0-0"
        self._closed = False

    async def _fetch(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        if self._closed:
            raise RuntimeError("fetch on a closed subscription")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        with translated(f"fetch {self.queue}/{self.group}"):
            while True:
                deliveries = await self._in_group(self._claim_or_read, max_messages)
                if deliveries:
                    return deliveries
                block_ms = min(self._transport.block_ms, int((deadline - loop.time()) * 1000))
                if block_ms <= 0:
                    return []
                deliveries = await self._in_group(self._read_blocking, max_messages, block_ms)
                if deliveries:
                    return deliveries

    async def _claim_or_read(self, max_messages: int) -> list[Delivery]:
        reply = await self._transport.eval_hot(
            self._transport.scripts.fetch,
            [self.key],
            [
                self.group,
                self.member,
                max_messages,
                self._transport.claim_min_idle_ms,
                self._cursor,
            ],
        )
        self._cursor, *rows = reply
        return [
            RedisDelivery(self, entry_id.decode(), _body(fields), int(count))
            for entry_id, fields, count in rows
        ]

    async def _read_blocking(self, max_messages: int, block_ms: int) -> list[Delivery]:
        reply: Any = await self._transport.blocking.xreadgroup(
            self.group, self.member, {self.key: ">"}, count=max_messages, block=block_ms
        )
        if not reply:
            return []
        [[_, entries]] = reply
        return [
            RedisDelivery(self, entry_id.decode(), fields.get(BODY_FIELD, b""), 1)
            for entry_id, fields in entries
        ]

    async def _in_group(self, call: Callable[..., Awaitable[T]], *args: int) -> T:
        """Run ``call``; if the group is gone (queue deleted meanwhile) recreate it once."""
        from redis.exceptions import ResponseError

        try:
            return await call(*args)
        except ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
        await self._transport.create_group(self.queue, self.group)
        return await call(*args)

    async def finish(self, entry_id: str) -> None:
        with translated(f"ack {self.queue}/{self.group}"), _group_may_be_gone():
            await self._transport.eval_hot(
                self._transport.scripts.ack, [self.key], [self.group, entry_id]
            )

    async def give_back(self, entry_id: str, delay_s: float) -> None:
        """Park the entry, reclaimable by any member after ``delay_s`` (at most
        ``claim_min_idle_ms``); a no-op if another member has already reclaimed it."""
        idle_ms = max(0, self._transport.claim_min_idle_ms - int(delay_s * 1000))
        await self._move(entry_id, RETURNED, idle_ms)

    async def extend(self, entry_id: str) -> None:
        await self._move(entry_id, self.member, 0)

    async def _move(self, entry_id: str, to: str, idle_ms: int) -> None:
        with translated(f"XCLAIM {self.queue}/{self.group}"), _group_may_be_gone():
            await self._transport.scripts.move(
                [self.key], [self.group, self.member, to, idle_ms, entry_id]
            )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._transport.subscriptions.discard(self)
        with translated(f"close {self.queue}/{self.group}/{self.member}"), _group_may_be_gone():
            await self._transport.scripts.release(
                [self.key], [self.group, self.member, RETURNED, self._transport.claim_min_idle_ms]
            )


class RedisDelivery(Delivery):
    def __init__(
        self, subscription: RedisSubscription, entry_id: str, body: bytes, attempt: int
    ) -> None:
        self.subscription = subscription
        self.id = entry_id
        self.body = body
        self.attempt = attempt

    async def ack(self) -> None:
        await self.subscription.finish(self.id)

    async def nack(self, delay_s: float = 0.0) -> None:
        await self.subscription.give_back(self.id, delay_s)

    async def in_progress(self) -> None:
        await self.subscription.extend(self.id)


class RedisListener(Listener):
    def __init__(self, transport: RedisStreamsTransport, pubsub: PubSub, channel: str) -> None:
        self.channel = channel
        self._transport = transport
        self._pubsub = pubsub

    async def _receive(self, timeout_s: float) -> bytes | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        with translated(f"receive {self.channel}"):
            while True:
                remaining = max(0.0, deadline - loop.time())
                message = await self._pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=remaining
                )
                if message is not None and message["type"] == "message":
                    data: bytes = message["data"]
                    return data
                if remaining <= 0:
                    return None

    async def close(self) -> None:
        self._transport.listeners.discard(self)
        await _close(self._pubsub)


async def _close(pubsub: PubSub) -> None:
    # redis-py annotates ``aclose`` only from 8.2: a call through a typed alias type-checks
    # on every version the lock and pyproject's range allow, where an ignore holds on one.
    aclose: Callable[[], Awaitable[None]] = pubsub.aclose
    await aclose()


def _body(fields: list[bytes]) -> bytes:
    """The body from a flat ``[field, value, ...]`` list; an entry someone else wrote
    without it yields ``b""``, which the consumer's decoder dead-letters."""
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    return values.get(BODY_FIELD, b"")


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Client errors become the project's: lost connections and timeouts are retryable
    :class:`BrokerUnavailable`; refused credentials and command errors are fatal."""
    from redis import exceptions

    try:
        yield
    except (exceptions.AuthenticationError, exceptions.AuthorizationError) as exc:
        raise TransportError(f"redis: {what}: {exc} ({CREDENTIAL_SETTINGS})") from exc
    except (exceptions.ConnectionError, exceptions.TimeoutError) as exc:
        raise BrokerUnavailable(f"redis: {what}: {exc}") from exc
    except exceptions.NoPermissionError as exc:
        raise TransportError(f"redis: {what}: {exc} (the ACL user redis.username)") from exc
    except exceptions.RedisError as exc:
        unauthenticated = str(exc).startswith("NOAUTH") or "authenticated" in str(exc)
        hint = f" ({CREDENTIAL_SETTINGS})" if unauthenticated else ""
        raise TransportError(f"redis: {what}: {exc}{hint}") from exc


@contextlib.contextmanager
def _group_may_be_gone() -> Iterator[None]:
    """Finishing work on a deleted queue has nothing left to do."""
    from redis.exceptions import ResponseError

    try:
        yield
    except ResponseError as exc:
        if not str(exc).startswith("NOGROUP"):
            raise


Command = tuple[Any, ...]


class _Coalescer:
    """Concurrent callers' commands, sent as few non-transactional pipelines.

    A caller's commands stay adjacent and in order in one pipeline; the pipeline goes
    when a slot of ``in_flight`` is free, so alone a command goes at once and under load
    each round trip carries everyone who asked meanwhile. A reply that is an error is
    raised to its own caller only; a failed pipeline fails each caller in it.
    """

    def __init__(self, client: Redis, in_flight: int) -> None:
        self._client = client
        self._slots = in_flight
        self._queued: list[tuple[tuple[Command, ...], asyncio.Future[list[Any]]]] = []
        self._senders: set[asyncio.Task[None]] = set()
        self._sending = 0
        """Senders not yet done: counted down the moment one finds nothing queued (a
        done callback would leave a gap in which new commands start no sender)."""

    async def run(self, *commands: Command) -> list[Any]:
        done: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._queued.append((commands, done))
        if self._sending < self._slots:
            self._sending += 1
            sender = asyncio.create_task(self._send_queued())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        replies = await done
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _send_queued(self) -> None:
        try:
            await self._send_all_queued()
        finally:
            self._sending -= 1

    async def _send_all_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            pipe = self._client.pipeline(transaction=False)
            for commands, _ in batch:
                for command in commands:
                    pipe.execute_command(*command)
            try:
                replies = await pipe.execute(raise_on_error=False)
            except asyncio.CancelledError:
                for _, done in batch:
                    done.cancel()
                raise
            except Exception as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            at = 0
            for commands, done in batch:
                if not done.done():
                    done.set_result(replies[at : at + len(commands)])
                at += len(commands)

    async def close(self) -> None:
        for sender in list(self._senders):
            sender.cancel()
        await asyncio.gather(*self._senders, return_exceptions=True)


class _Scripts:
    """The Lua scripts, registered on the command client.

    A script runs atomically, which is what makes "move this entry only if it is still
    mine" and "drop the member only once it holds nothing" safe against other members
    acting at the same time. Calls reload a script Redis lost (restart, SCRIPT FLUSH).
    """

    def __init__(self, client: Redis) -> None:
        self._client = client
        self.declare: AsyncScript = client.register_script(DECLARE_LUA)
        self.fetch: AsyncScript = client.register_script(FETCH_LUA)
        self.ack: AsyncScript = client.register_script(ACK_LUA)
        self.record_ack: AsyncScript = client.register_script(RECORD_ACK_LUA)
        self.move: AsyncScript = client.register_script(MOVE_LUA)
        self.release: AsyncScript = client.register_script(RELEASE_LUA)
        self.backlog: AsyncScript = client.register_script(BACKLOG_LUA)
        self.publish_once: AsyncScript = client.register_script(PUBLISH_ONCE_LUA)
        self.lease: AsyncScript = client.register_script(LEASE_LUA)
        self.release_lease: AsyncScript = client.register_script(RELEASE_LEASE_LUA)

    async def load_backlog(self) -> None:
        self.backlog.sha = await self._client.script_load(BACKLOG_LUA)


# ---------------------------------------------------------------- Lua (RESP2 replies)

LEASE_LUA = """
-- Lease KEYS[1] ("token|holder", expiring) for holder ARGV[1], ARGV[2] ms; KEYS[2] is
-- the lease's token counter, which never expires. Renews the holder's own lease (same
-- token), takes a free one with SET NX PX and a new token, refuses another's (-1).
local current = redis.call('GET', KEYS[1])
if current then
  local token, holder = string.match(current, '^(%d+)|(.*)$')
  if holder ~= ARGV[1] then return -1 end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(token)
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. '|' .. ARGV[1], 'NX', 'PX', ARGV[2])
return token
"""

RELEASE_LEASE_LUA = """
-- Delete lease KEYS[1] only while holder ARGV[1] has it.
local current = redis.call('GET', KEYS[1])
if current and string.match(current, '^%d+|(.*)$') == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 0
"""

DECLARE_LUA = """
-- An empty stream, made by creating and destroying a throwaway group; an existing
-- stream is left alone.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '$', 'MKSTREAM')
redis.call('XGROUP', 'DESTROY', KEYS[1], ARGV[1])
return 1
"""

FETCH_LUA = """
-- Up to ARGV[3] entries for member ARGV[2] of group ARGV[1]: first entries idle for
-- ARGV[4] ms (any member's), scanning the PEL from cursor ARGV[5], then new entries.
-- Reply: {next cursor, {id, {field, value, ...}, delivery count}, ...}.
local stream, group, member = KEYS[1], ARGV[1], ARGV[2]
local count = tonumber(ARGV[3])
local claimed = redis.call('XAUTOCLAIM', stream, group, member, ARGV[4], ARGV[5], 'COUNT', count)
local out = {claimed[1]}
for _, entry in ipairs(claimed[2]) do
  local held = redis.call('XPENDING', stream, group, entry[1], entry[1], 1)
  out[#out + 1] = {entry[1], entry[2], held[1][4]}
end
local wanted = count - (#out - 1)
if wanted > 0 then
  local read = redis.call('XREADGROUP', 'GROUP', group, member, 'COUNT', wanted,
                          'STREAMS', stream, '>')
  if read then
    for _, entry in ipairs(read[1][2]) do out[#out + 1] = {entry[1], entry[2], 1} end
  end
end
return out
"""

ACK_LUA = """
-- Ack entry ARGV[2] for group ARGV[1]; delete it when no other group may still need it.
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
if #redis.call('XINFO', 'GROUPS', KEYS[1]) == 1 then redis.call('XDEL', KEYS[1], ARGV[2]) end
return 1
"""

RECORD_ACK_LUA = """
-- Keep record KEYS[1] = ARGV[1] for ARGV[2] ms, listed in index KEYS[2] under ARGV[4]
-- scored by its expiry ARGV[3] (index trimmed of what expired by ARGV[5], and living as
-- long as its longest-lived record); then ack entry ARGV[7] of group ARGV[6] of stream
-- KEYS[3] as ACK_LUA does. Record first: a NOGROUP from the ack still leaves it kept.
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[2], 'NX')
redis.call('PEXPIRE', KEYS[2], ARGV[2], 'GT')
if redis.call('XACK', KEYS[3], ARGV[6], ARGV[7]) == 0 then return 0 end
if #redis.call('XINFO', 'GROUPS', KEYS[3]) == 1 then redis.call('XDEL', KEYS[3], ARGV[7]) end
return 1
"""

MOVE_LUA = """
-- Give entry ARGV[5] of group ARGV[1] to consumer ARGV[3] with idle time ARGV[4] ms, only
-- if member ARGV[2] still holds it (not acked, not reclaimed by another member).
local held = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[5], ARGV[5], 1)
if #held == 0 or held[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[5], 'IDLE', ARGV[4], 'JUSTID')
return 1
"""

RELEASE_LUA = """
-- Give every entry member ARGV[2] of group ARGV[1] holds to consumer ARGV[3] with idle
-- time ARGV[4] ms (claimable at once), then delete the member if it holds nothing.
local batch = 100
for _ = 1, 1000 do
  local held = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', batch, ARGV[2])
  if #held > 0 then
    local claim = {'XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0}
    for _, entry in ipairs(held) do claim[#claim + 1] = entry[1] end
    for _, option in ipairs({'IDLE', ARGV[4], 'JUSTID'}) do claim[#claim + 1] = option end
    redis.call(unpack(claim))
  end
  if #held < batch then break end
end
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
end
return 1
"""

PUBLISH_ONCE_LUA = """
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

BACKLOG_LUA = """
-- For each stream KEYS[i] and its group ARGV[3 + i]: pending, in_flight, the age in ms
-- of the oldest pending entry (-1: none) and the entries ever added (the group's
-- entries-read + its undelivered ones; XLEN with no group; -1: unknown), flattened.
-- Pending: undelivered entries, entries parked with consumer ARGV[1], and entries of
-- other consumers idle for ARGV[2] ms (the next fetch reclaims them; at most ARGV[3] of
-- a PEL are examined). A missing stream costs XLEN and EXISTS, an empty one XINFO GROUPS too.
local parked, min_idle_ms, scan_limit = ARGV[1], ARGV[2], ARGV[3]
local clock = redis.call('TIME')
local now_ms = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local out = {}

local function id_ms(id)  -- an entry id starts with its append time in ms
  return tonumber(string.match(id, '^(%d+)'))
end

local function earliest(oldest, id)
  local ms = id_ms(id)
  if oldest == nil or ms < oldest then return ms end
  return oldest
end

local function find_group(stream, group)  -- XINFO GROUPS: flat {field, value, ...} per group
  for _, fields in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    if fields[2] == group then
      local g = {}
      for i = 1, #fields, 2 do g[fields[i]] = fields[i + 1] end
      return g
    end
  end
  return nil
end

local function backlog(stream, group)
  local length = redis.call('XLEN', stream)
  if length == 0 and redis.call('EXISTS', stream) == 0 then return 0, 0, nil, 0 end
  local info = find_group(stream, group)
  if info == nil then
    if length == 0 then return 0, 0, nil, 0 end
    return length, 0, id_ms(redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1][1]), length
  end

  local oldest = nil
  local in_pel = info['pending']
  local undelivered
  if info['lag'] then
    undelivered = math.min(info['lag'], length)  -- lag still counts trimmed entries
  else
    undelivered = math.max(0, length - in_pel)   -- acked entries are deleted
  end
  local added = -1
  if info['entries-read'] then added = info['entries-read'] + undelivered end
  if length == 0 then return 0, 0, nil, added end
  if undelivered > 0 then
    local after = redis.call('XRANGE', stream, '(' .. info['last-delivered-id'], '+', 'COUNT', 1)
    if after[1] then oldest = id_ms(after[1][1]) end
  end
  if in_pel == 0 then return undelivered, 0, oldest, added end

  local parked_count = 0
  for _, consumer in ipairs(redis.call('XPENDING', stream, group)[4]) do
    if consumer[1] == parked then parked_count = tonumber(consumer[2]) end
  end
  if parked_count > 0 then
    oldest = earliest(oldest, redis.call('XPENDING', stream, group, '-', '+', 1, parked)[1][1])
  end
  local stuck = 0
  if in_pel > parked_count then
    local idle = redis.call('XPENDING', stream, group, 'IDLE', min_idle_ms, '-', '+', scan_limit)
    for _, entry in ipairs(idle) do
      if entry[2] ~= parked then
        stuck = stuck + 1
        oldest = earliest(oldest, entry[1])
      end
    end
  end
  return undelivered + parked_count + stuck, in_pel - parked_count - stuck, oldest, added
end

for i, stream in ipairs(KEYS) do
  local pending, in_flight, oldest, added = backlog(stream, ARGV[3 + i])
  out[#out + 1] = pending
  out[#out + 1] = in_flight
  out[#out + 1] = oldest and math.max(0, now_ms - oldest) or -1
  out[#out + 1] = added
end
return out
"""


def _check_url(url: str) -> None:
    """A malformed ``redis.url`` is one line naming it, not redis-py's traceback (or, for
    a database that is not a number, silently database 0)."""
    if url.startswith("unix://"):
        return
    if "://" not in url:
        raise ConfigError(f"redis.url: {url!r} is not redis://host[:port][/db] (no scheme)")
    broker_addresses("redis.url", url, schemes=("redis", "rediss"), default_port=6379, many=False)
    database = urlsplit(url).path.strip("/")
    if database and not database.isdigit():
        raise ConfigError(f"redis.url: database {database!r} in {url!r} is not a number")


def _sentinel(sentinels: Sequence[tuple[str, int]], password: str | None) -> Sentinel:
    from redis.asyncio.sentinel import Sentinel

    # Typed alias: redis-py annotates Sentinel only from 8.2 (see ``_close``).
    make: Callable[..., Sentinel] = Sentinel
    return make(
        list(sentinels),
        sentinel_kwargs={"password": password, "socket_timeout": CONNECT_TIMEOUT_S},
    )


def _master_pool(
    url: str, sentinel: Sentinel, master: str, options: dict[str, Any]
) -> ConnectionPool:
    """The master's pool as the Sentinels name it: redis-py's Sentinel pool, but one
    that, like the direct one, makes callers wait for a free connection. ``url`` gives
    the database and TLS."""
    from redis.asyncio import BlockingConnectionPool
    from redis.asyncio.connection import SSLConnection, parse_url
    from redis.asyncio.sentinel import SentinelConnectionPool

    class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
        pass

    from_url = parse_url(url)
    database: dict[str, Any] = {"db": from_url.get("db", 0)}
    if from_url.get("connection_class") is SSLConnection:
        database["ssl"] = True
    make: Callable[..., ConnectionPool] = BlockingSentinelPool  # untyped in redis-py
    return make(master, sentinel, **database, **options)
