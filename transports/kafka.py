"""Apache Kafka transport (aiokafka): a topic per action queue, a consumer group per action.

Members join with the classic protocol through aiokafka, or with KIP-848
(``group_protocol = "consumer"``) through confluent-kafka (:mod:`transports.kafka_consumer`);
everything else — topics, publishing, backlog, commits, nacks, channels — is this
module's either way. Share groups are :mod:`transports.kafka_share`.

Features
    * queue = topic (the caller passes the full name), group = consumer group, a
      :class:`KafkaSubscription` = one consumer in that group. Partitions are the unit of
      parallelism: :meth:`KafkaTransport.max_consumers` is the partition count and a member
      beyond it sits idle. :meth:`KafkaTransport.resize` adds partitions (never removes).
    * at-least-once: ``ack`` marks an offset done and a background committer commits, per
      partition, the highest *contiguous* acked offset + 1 (acks may come out of order when
      a member fetched several). A clean :meth:`KafkaSubscription.close` commits what was
      acked and leaves the group; the next owner of a partition resumes from the committed
      offset, so everything unacked is redelivered.
    * ``nack(delay_s)``: Kafka cannot un-deliver in place, so a copy is republished to the
      same topic (same key, header ``attempt`` = attempt + 1) after ``delay_s`` and the
      original then counts as acked. A rebalance or ``close`` cuts pending delays short (the
      copies are published at once) so nothing is lost or duplicated.
    * ``backlog``/``backlogs``: pending + in_flight = Σ(end offset - committed offset, or the
      beginning offset when the group never committed), from one ListOffsets round and one
      OffsetFetch per group, all concurrent.
    * topics are created on first publish or subscribe when not declared (the native
      broker runs with auto-creation off).
    * channels: a topic ``_chan.{channel}`` per channel (1 partition, 5 min retention,
      created on demand, never deleted) read by a group-less consumer positioned at the
      end before :meth:`KafkaTransport.listen` returns.
    * records: one compacted topic ``_records`` (1 partition, ``cleanup.policy``
      compact,delete, ``retention.ms`` the first ``ttl_s`` put), keyed ``{scope}/{key}``
      with the ttl in a header. Each transport reads it into memory with a group-less
      consumer, up to the end offset of the moment, before answering a get or a listing,
      so it sees every record put before the call.
    * every broker call is bounded (``request_timeout_ms``, constructor, default 5 s):
      an unreachable broker raises :class:`BrokerUnavailable` instead of hanging. A
      publish is refused so (within 0.5 s) before the producer buffers it when its
      partition's leader cannot be reached; a keyed one keeps its key's partition, a
      keyless one goes to a partition a live node leads.
    * rebalance events per subscription (:attr:`KafkaSubscription.events`,
      :attr:`KafkaSubscription.on_rebalance`) so a benchmark can time the pause.

Connection settings (``[kafka]``): ``bootstrap_servers``, ``security_protocol``
(PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), ``sasl_mechanism`` (PLAIN, SCRAM-SHA-256/512),
``sasl_username``, ``sasl_password``, ``ssl_cafile``.

Options (``[kafka]``): ``default_partitions`` (the floor for topics this transport
creates), ``replication_factor``, ``group_protocol`` (classic, consumer; the timings and
the assignor below apply to classic only, KIP-848 takes them from the broker),
``assignor`` (range, roundrobin, sticky),
``session_timeout_ms``, ``heartbeat_interval_ms``, ``rebalance_timeout_ms``,
``max_poll_interval_ms``, ``metadata_max_age_ms`` (how soon members see new partitions),
``group_instance_id`` (static membership, ``{member}`` is replaced by the member id).
Topics are created with ``max.message.bytes`` = 1.5 x ``max_payload_bytes`` + 64 KiB, room
for the base64 dead-letter envelope of a payload at the limit.

Known limits
    * classic: eager rebalancing only (aiokafka has no cooperative protocol): every join,
      leave and resize revokes *all* partitions of the group, and unacked messages in
      them are redelivered, even to the member that already holds them. KIP-848 revokes
      only the partitions that move, but hands them over at the members' heartbeats
      (the broker's ``group.consumer.heartbeat.interval.ms``, 5 s by default).
    * ``attempt`` counts nacks only: a redelivery after a rebalance, crash or close re-reads
      the same record, whose header Kafka cannot change.
    * ``in_flight`` is what *this* transport object fetched and has not acked; messages in
      flight in other processes are counted as pending. A delayed nack stays in flight
      until its copy is published.
    * static membership: aiokafka sends no LeaveGroup for a static member, so its
      partitions move to others only after ``session_timeout_ms`` (as in the Java client).
    * deleting a topic leaves its group; the broker drops the group's offsets for it.
    * ``oldest_age_s`` is not reported (``None``).
    * backlog cost grows with the number of groups: aiokafka speaks OffsetFetch up to v3,
      one group per request (~0.3-0.4 ms per action on loopback, 200-1,000 actions).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Self

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
    Subscription,
    Transport,
    broker_addresses,
)
from transports.kafka_consumer import GroupConsumer, require_confluent

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.structs import TopicPartition

    from broker_sched.config import Settings

log = logging.getLogger(__name__)

ATTEMPT_HEADER = "attempt"
CHANNEL_PREFIX = "_chan."
CHANNEL_RETENTION_MS = 300_000
RECORDS_TOPIC = "_records"
TTL_HEADER = "ttl_ms"
_ENVELOPE_HEADROOM_BYTES = 65_536
_TOPIC_EXISTS = 36
_UNKNOWN_TOPIC = 3
_INVALID_TOPIC = 17
_METADATA_BACKOFF_S = 0.01
_METADATA_BACKOFF_MAX_S = 0.2
_REPUBLISH_TRIES = 3
_REPUBLISH_BACKOFF_S = 0.2
_LEADER_PROBE_S = 0.5
_INVALID_TOPIC_CHARS = re.compile(r"[^A-Za-z0-9._-]")

RebalanceKind = Literal["revoked", "assigned"]


@dataclass(frozen=True, slots=True)
class RebalanceEvent:
    """``revoked`` marks the start of a rebalance for a member, ``assigned`` its end.

    ``at_s`` is :func:`time.monotonic`; ``partitions`` are the revoked or new ones.
    """

    at_s: float
    kind: RebalanceKind
    partitions: tuple[int, ...]


@dataclass(slots=True)
class _Clients:
    producer: AIOKafkaProducer
    admin: AIOKafkaAdminClient
    offsets: _OffsetReader


class KafkaSettings(BackendSettings):
    bootstrap_servers: str = "127.0.0.1:9092"
    default_partitions: int = Field(default=1, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    group_protocol: Literal["classic", "consumer"] = Field(
        default="classic",
        description="classic: aiokafka, eager rebalances; consumer: KIP-848 (confluent-kafka)",
    )
    assignor: Literal["range", "roundrobin", "sticky"] = "roundrobin"
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    rebalance_timeout_ms: int = 10_000
    max_poll_interval_ms: int = 300_000
    metadata_max_age_ms: int = 1_000
    group_instance_id: str | None = Field(
        default=None, description="static membership; '{member}' is replaced by the member id"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    share_max_poll_records: int = Field(
        default=16, ge=1, description="kafka-share: records a member acquires per poll"
    )
    share_surplus_hold_ms: int = Field(
        default=1_000,
        ge=0,
        description="kafka-share: acquired records nobody asked for are released after this",
    )
    share_delivery_limit: int = Field(
        default=8,
        ge=1,
        le=9,
        description="kafka-share: deliveries before a record is rejected and dead-lettered",
    )
    share_lock_duration_ms: int = Field(
        default=60_000,
        ge=1_000,
        le=3_600_000,
        description="kafka-share: the group's acquisition lock, the longest run executed once "
        "(the Python client cannot renew it); at most the broker's "
        "group.share.max.record.lock.duration.ms (60 s unless raised)",
    )


class KafkaTransport(Transport):
    name = "kafka"
    settings_section = "kafka"
    settings_model = KafkaSettings
    capabilities = Capabilities(partitioned=True, rebalances=True, assigns_shards=True)

    def __init__(
        self,
        kafka: KafkaSettings | None = None,
        *,
        max_message_bytes: int = 1_048_576,
        request_timeout_ms: int = 5_000,
    ) -> None:
        """``request_timeout_ms`` bounds every broker call, so an outage fails fast."""
        _require_aiokafka()
        super().__init__(max_message_bytes=max_message_bytes)
        self.settings = kafka if kafka is not None else KafkaSettings()
        broker_addresses("kafka.bootstrap_servers", self.settings.bootstrap_servers)
        if self.settings.group_protocol == "consumer":
            require_confluent("kafka")
        self.request_timeout_ms = request_timeout_ms
        self.wire_limit_bytes = max_message_bytes * 3 // 2 + _ENVELOPE_HEADROOM_BYTES
        self._clients: _Clients | None = None
        self._connecting = asyncio.Lock()
        self._topics: set[str] = set()
        self._produced: set[str] = set()
        self._coordinators: dict[str, int] = {}
        self._subscriptions: set[KafkaSubscription] = set()
        self._listeners: set[KafkaListener] = set()
        self._records: _RecordView | None = None
        self._records_lock = asyncio.Lock()
        self._owners: AIOKafkaConsumer | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings.section(KafkaSettings), max_message_bytes=settings.max_payload_bytes)

    @property
    def _timeout_s(self) -> float:
        return self.request_timeout_ms / 1000

    # ------------------------------------------------------------------ connection

    async def connect(self) -> None:
        await self._connected()

    async def _connected(self) -> _Clients:
        """The shared clients, started on first use; :class:`BrokerUnavailable` if not."""
        if self._clients is not None:
            return self._clients
        async with self._connecting:
            if self._clients is None:
                self._clients = await self._start_clients()
            return self._clients

    async def _start_clients(self) -> _Clients:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
        from aiokafka.admin import AIOKafkaAdminClient

        common = self._client_kwargs()
        producer = AIOKafkaProducer(
            **common,
            acks="all",
            enable_idempotence=True,
            max_request_size=self.wire_limit_bytes,
            request_timeout_ms=self.request_timeout_ms,
        )
        admin = AIOKafkaAdminClient(**common, request_timeout_ms=self.request_timeout_ms)
        offsets = AIOKafkaConsumer(
            **common,
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=self.request_timeout_ms,
        )
        try:
            async with _broker_errors("connect", self._timeout_s * 2):
                await producer.start()
                await admin.start()
                await offsets.start()
        except BaseException as exc:
            for stop in (producer.stop, admin.close, offsets.stop):
                with contextlib.suppress(Exception):
                    await stop()
            if isinstance(exc, BrokerUnavailable):
                await self._explain_refusal()
            raise
        max_age_s = self.settings.metadata_max_age_ms / 1000
        return _Clients(producer, admin, _OffsetReader(offsets, admin, max_age_s))

    async def _explain_refusal(self) -> None:
        """aiokafka reports any failed bootstrap as "unable to bootstrap" and only logs
        why; one direct connection finds out, and a broker that answered but refused
        the credentials or the protocol is a :class:`ConfigError` naming the setting."""
        import ssl

        from aiokafka.conn import create_conn
        from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

        kwargs = self._client_kwargs()
        kwargs.pop("bootstrap_servers")
        kwargs.pop("metadata_max_age_ms")
        host, _, port = self.settings.bootstrap_servers.split(",")[0].strip().rpartition(":")
        where = f"{host}:{port}"
        try:
            async with asyncio.timeout(self._timeout_s):
                conn = await create_conn(host, int(port), **kwargs)
            conn.close()
        except SaslAuthenticationFailed as exc:
            raise ConfigError(
                f"kafka: {where} refused kafka.sasl_username / kafka.sasl_password: {exc}"
            ) from exc
        except ssl.SSLError as exc:
            raise ConfigError(
                f"kafka: TLS with {where} failed (kafka.ssl_cafile, kafka.security_protocol): {exc}"
            ) from exc
        except KafkaConnectionError as exc:
            if "closed" in str(exc):
                raise ConfigError(
                    f"kafka: {where} closed the connection: does kafka.security_protocol = "
                    f"{self.settings.security_protocol!r} match its listener? ({exc})"
                ) from exc
        except (OSError, TimeoutError):
            return

    def _client_kwargs(self) -> dict[str, Any]:
        """Bootstrap, metadata refresh and security options shared by every client."""
        kafka = self.settings
        kwargs: dict[str, Any] = {
            "bootstrap_servers": kafka.bootstrap_servers,
            "metadata_max_age_ms": kafka.metadata_max_age_ms,
            "security_protocol": kafka.security_protocol,
        }
        if kafka.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            kwargs["ssl_context"] = create_ssl_context(cafile=kafka.ssl_cafile)
        if kafka.security_protocol.startswith("SASL"):
            kwargs["sasl_mechanism"] = kafka.sasl_mechanism or "PLAIN"
            kwargs["sasl_plain_username"] = kafka.sasl_username
            password = kafka.sasl_password
            kwargs["sasl_plain_password"] = password.get_secret_value() if password else None
        return kwargs

    async def close(self) -> None:
        """Close members (committing their acks), listeners, then the shared clients."""
        closes: list[Callable[[], Awaitable[None]]] = [s.close for s in self._subscriptions]
        closes += [listener.close for listener in self._listeners]
        if self._records is not None:
            closes.append(self._records.consumer.stop)
            self._records = None
        if self._owners is not None:
            closes.append(self._owners.stop)
            self._owners = None
        for close in closes:
            await _quietly(close)
        clients, self._clients = self._clients, None
        if clients is not None:
            for stop in (clients.producer.stop, clients.offsets.consumer.stop, clients.admin.close):
                await _quietly(stop)

    async def ping(self) -> str:
        admin = (await self._connected()).admin
        async with _broker_errors("ping", self._timeout_s):
            cluster = await admin.describe_cluster()
        return (
            f"kafka at {self.settings.bootstrap_servers} "
            f"(cluster {cluster['cluster_id']}, {len(cluster['brokers'])} brokers)"
        )

    # ------------------------------------------------------------------ shards

    async def hold_shards(self, holder: str, shards: int, ttl_s: float) -> dict[int, int]:
        """Consumer-group assignment over the topic ``_owners.<shards>`` (a partition
        per shard, never written; the group is named like it), as Kafka Streams hands
        out its tasks: the group coordinator
        gives each partition to one member of a generation, and a member whose
        heartbeats stop is dropped after its session timeout (``ttl_s``, or 6 s where
        the broker's ``group.min.session.timeout.ms`` refuses it), and one that stops calling
        leaves after the same time (its poll interval). The token is the generation.

        Only while the member knows its coordinator and is in a settled generation are
        its partitions reported: a member cut off from the broker stops reporting
        them once aiokafka marks the coordinator dead, which can be up to a heartbeat
        interval after the broker reassigned them (the window a lease's fencing token
        is for).
        """

        consumer = self._owners
        if consumer is None:
            topic = owners_topic(shards)
            await self._create_topic(topic, shards, {"retention.ms": "60000"})
            consumer = await self._join_owners(topic, holder, int(ttl_s * 1000))
            self._owners = consumer
        async with _broker_errors("owners' group", self._timeout_s):
            await consumer.getmany(timeout_ms=0)
        coordinator = consumer._coordinator
        if coordinator is None or coordinator.coordinator_id is None:
            return {}
        if coordinator.need_rejoin(consumer._subscription.subscription):
            return {}
        generation: int = coordinator.generation
        if generation < 1:
            return {}
        return {tp.partition: generation for tp in consumer.assignment()}

    async def _join_owners(self, topic: str, holder: str, session_ms: int) -> AIOKafkaConsumer:
        """A member of the owners' group with ``session_ms`` sessions, or Kafka's default
        minimum (6 s, logged: a dead controller's shards then move after 6 s) when the
        broker's ``group.min.session.timeout.ms`` refuses it."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
        from aiokafka.errors import InvalidSessionTimeoutError

        for session in (session_ms, max(session_ms, KAFKA_MIN_SESSION_MS)):
            consumer = AIOKafkaConsumer(
                topic,
                **self._client_kwargs(),
                group_id=topic,
                client_id=holder,
                enable_auto_commit=False,
                partition_assignment_strategy=(RoundRobinPartitionAssignor,),
                session_timeout_ms=session,
                heartbeat_interval_ms=max(100, session // 10),
                rebalance_timeout_ms=session,
                max_poll_interval_ms=session,
                request_timeout_ms=session + self.request_timeout_ms,
            )
            try:
                async with _broker_errors("join the owners' group", self._timeout_s * 2):
                    await consumer.start()
                    await consumer.getmany(timeout_ms=0)
                return consumer
            except TransportError as exc:
                await _quietly(consumer.stop)
                if not isinstance(exc.__cause__, InvalidSessionTimeoutError):
                    raise
                log.warning(
                    "kafka: the broker refuses %d ms group sessions; the owners' group uses "
                    "%d ms (lower group.min.session.timeout.ms for faster failover)",
                    session,
                    KAFKA_MIN_SESSION_MS,
                )
            except BaseException:
                await _quietly(consumer.stop)
                raise
        raise TransportError(f"kafka: the broker refuses {KAFKA_MIN_SESSION_MS} ms sessions")

    async def release_shards(self, holder: str) -> None:
        consumer, self._owners = self._owners, None
        if consumer is not None:
            await _quietly(consumer.stop)

    # ------------------------------------------------------------------ topics

    async def declare(self, queue: str, partitions: int = 1) -> None:
        """Create the topic with at least ``default_partitions``; an existing one is kept."""
        await self._create_topic(queue, max(partitions, self.settings.default_partitions), {})

    async def _create_topic(self, topic: str, partitions: int, configs: dict[str, str]) -> None:
        from aiokafka.admin import NewTopic

        clients = await self._connected()
        new = NewTopic(
            topic,
            partitions,
            self.settings.replication_factor,
            topic_configs={"max.message.bytes": str(self.wire_limit_bytes), **configs},
        )
        async with _broker_errors(f"create topic {topic!r}", self._timeout_s):
            response = await clients.admin.create_topics([new], timeout_ms=self.request_timeout_ms)
            settled = 1
            for name, code, message in response.topic_errors:
                if code == _INVALID_TOPIC:
                    raise ConfigError(f"invalid Kafka topic name {name!r}: {message}")
                if code not in (0, _TOPIC_EXISTS):
                    raise _response_error(code, f"create topic {name!r}: {message}")
                settled = partitions if code == 0 else 1
            await clients.offsets.await_partitions(topic, settled)
        self._topics.add(topic)

    async def _ensure_topic(self, topic: str) -> None:
        """Topics are created on first use: the native broker has auto-creation off."""
        if topic not in self._topics:
            await self.declare(topic)

    async def resize(self, queue: str, partitions: int) -> int:
        """Grow ``queue``; members see the new partitions within ``metadata_max_age_ms``."""
        from aiokafka.admin import NewPartitions
        from aiokafka.errors import InvalidPartitionsError

        clients = await self._connected()
        async with _broker_errors(f"resize {queue!r}", self._timeout_s):
            current = await clients.offsets.fresh_count(queue)
        if current == 0:
            await self.declare(queue, partitions)
        elif partitions > current:
            try:
                async with _broker_errors(f"resize {queue!r}", self._timeout_s):
                    await clients.admin.create_partitions(
                        {queue: NewPartitions(partitions)}, timeout_ms=self.request_timeout_ms
                    )
            except TransportError as exc:  # someone grew it first: report what is in force
                if not isinstance(exc.__cause__, InvalidPartitionsError):
                    raise
        async with _broker_errors(f"resize {queue!r}", self._timeout_s):
            return await clients.offsets.await_partitions(queue, partitions)

    async def max_consumers(self, queue: str) -> int | None:
        """The partition count; a queue not yet created reports ``default_partitions``."""
        offsets = (await self._connected()).offsets
        async with _broker_errors("metadata", self._timeout_s):
            counts = await offsets.counts([queue])
        return counts[queue] or self.settings.default_partitions

    async def delete(self, queue: str) -> None:
        """Delete the topic; its groups stay, but the broker drops their offsets for it."""
        clients = await self._connected()
        self._topics.discard(queue)
        self._produced.discard(queue)
        async with _broker_errors(f"delete topic {queue!r}", self._timeout_s):
            await clients.offsets.forget(queue)
            # The producer would otherwise log an error for it on every metadata refresh.
            await clients.producer.client.set_topics(self._produced)
            response = await clients.admin.delete_topics(
                [queue], timeout_ms=self.request_timeout_ms
            )
        for name, code in response.topic_error_codes:
            if code not in (0, _UNKNOWN_TOPIC):
                raise _response_error(code, f"delete topic {name!r}")

    async def delete_channel(self, channel: str) -> None:
        """A channel is a topic here, and a dead component's would stay for ever."""
        await self.delete(channel_topic(channel))

    # ------------------------------------------------------------------ queues

    async def _publish(self, queue: str, body: bytes, key: str | None) -> None:
        await self._ensure_topic(queue)
        await self._produce(queue, body, key.encode() if key is not None else None, None)

    async def _produce(
        self, topic: str, body: bytes, key: bytes | None, attempt: int | None
    ) -> None:
        from aiokafka.errors import MessageSizeTooLargeError

        producer = (await self._connected()).producer
        self._produced.add(topic)
        headers = [(ATTEMPT_HEADER, str(attempt).encode())] if attempt is not None else None
        try:
            async with _broker_errors(f"publish to {topic!r}", self._timeout_s * 2):
                await _send_past_leader_moves(producer, topic, body, key, headers)
        except TransportError as exc:
            if isinstance(exc.__cause__, MessageSizeTooLargeError):
                raise PayloadTooLarge(len(body), self.max_message_bytes) from exc.__cause__
            raise

    async def subscribe(self, queue: str, group: str, member: str) -> KafkaSubscription:
        await self._ensure_topic(queue)
        consumer = self._group_consumer(group, member)
        subscription = KafkaSubscription(self, queue, group, member, consumer)
        consumer.subscribe([queue], listener=_rebalance_listener(subscription))
        try:
            async with _broker_errors(f"subscribe to {queue!r}", self._timeout_s * 2):
                await consumer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        subscription.start_committer()
        self._subscriptions.add(subscription)
        return subscription

    def _group_consumer(self, group: str, member: str) -> Any:
        """An aiokafka consumer (classic protocol) or its KIP-848 counterpart."""
        kafka = self.settings
        fetch_bytes = max(1_048_576, self.wire_limit_bytes)
        if kafka.group_protocol == "consumer":
            return GroupConsumer(
                kafka,
                group=group,
                member=member,
                **{"max.partition.fetch.bytes": fetch_bytes, "fetch.max.bytes": fetch_bytes * 2},
            )
        from aiokafka import AIOKafkaConsumer

        instance = kafka.group_instance_id
        return AIOKafkaConsumer(
            **self._client_kwargs(),
            group_id=group,
            group_instance_id=instance.format(member=member) if instance else None,
            client_id=member,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            partition_assignment_strategy=(_assignor(kafka.assignor),),
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=kafka.heartbeat_interval_ms,
            rebalance_timeout_ms=kafka.rebalance_timeout_ms,
            max_poll_interval_ms=kafka.max_poll_interval_ms,
            max_partition_fetch_bytes=fetch_bytes,
            # JoinGroup legitimately blocks on the broker for up to the rebalance timeout.
            request_timeout_ms=kafka.rebalance_timeout_ms + self.request_timeout_ms,
        )

    async def backlog(self, queue: str, group: str) -> Backlog:
        return (await self.backlogs([(queue, group)]))[0]

    async def backlogs(self, pairs: Sequence[tuple[str, str]]) -> list[Backlog]:
        """One ListOffsets round for all partitions and one OffsetFetch per group, concurrently."""
        if not pairs:
            return []
        from aiokafka.structs import TopicPartition

        offsets = (await self._connected()).offsets
        async with _broker_errors("backlog", self._timeout_s):
            counts = await offsets.counts(q for q, _ in pairs)
        partitions = {t: [TopicPartition(t, p) for p in range(n)] for t, n in counts.items()}
        by_group: dict[str, set[TopicPartition]] = {}
        for queue, group in pairs:
            by_group.setdefault(group, set()).update(partitions[queue])
        groups = [g for g, tps in by_group.items() if tps]
        every = [tp for tps in partitions.values() for tp in tps]
        if not every:
            return [self._empty_backlog() for _ in pairs]
        async with _broker_errors("backlog", self._timeout_s * 2):
            end, begin, *committed = await asyncio.gather(
                offsets.end_offsets(every),
                offsets.beginning_offsets(every),
                *(self._committed(g, sorted(by_group[g])) for g in groups),
            )
        committed_by_group = dict(zip(groups, committed, strict=True))
        local = self._local_tracks()
        return [
            _backlog_of(
                partitions[queue], end, begin, committed_by_group.get(group, {}), group, local
            )
            if partitions[queue]
            else self._empty_backlog()
            for queue, group in pairs
        ]

    def _empty_backlog(self) -> Backlog:
        return Backlog(
            pending=0, in_flight=0, partitions=self.settings.default_partitions, appended=0
        )

    async def _committed(self, group: str, partitions: list[TopicPartition]) -> dict[Any, Any]:
        """The group's committed offsets; a moved coordinator is looked up again, once."""
        from aiokafka.errors import KafkaError

        try:
            return await self._offset_fetch(group, partitions)
        except KafkaError as exc:
            self._coordinators.pop(group, None)
            if not exc.retriable:
                raise
            return await self._offset_fetch(group, partitions)

    async def _offset_fetch(self, group: str, partitions: list[TopicPartition]) -> dict[Any, Any]:
        admin = (await self._connected()).admin
        node = self._coordinators.get(group)
        if node is None:
            node = self._coordinators[group] = await admin.find_coordinator(group)
        result: dict[Any, Any] = await admin.list_consumer_group_offsets(group, node, partitions)
        return result

    def _local_tracks(self) -> dict[tuple[str, TopicPartition], list[_PartitionTrack]]:
        """What this process's members fetched, by ``(group, partition)``."""
        local: dict[tuple[str, TopicPartition], list[_PartitionTrack]] = {}
        for subscription in self._subscriptions:
            for tp, track in subscription.tracks.items():
                local.setdefault((subscription.group, tp), []).append(track)
        return local

    def _forget(self, subscription: KafkaSubscription) -> None:
        self._subscriptions.discard(subscription)

    # ------------------------------------------------------------------ channels

    async def send(self, channel: str, body: bytes) -> None:
        topic = channel_topic(channel)
        await self._ensure_channel(topic)
        await self._produce(topic, body, None, None)

    async def listen(self, channel: str) -> KafkaListener:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition

        topic = channel_topic(channel)
        await self._ensure_channel(topic)
        offsets = (await self._connected()).offsets
        async with _broker_errors(f"listen on {channel!r}", self._timeout_s):
            count = (await offsets.counts([topic]))[topic] or 1
        consumer = AIOKafkaConsumer(
            **self._client_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            max_partition_fetch_bytes=max(1_048_576, self.wire_limit_bytes),
            request_timeout_ms=self.request_timeout_ms,
        )
        partitions = [TopicPartition(topic, p) for p in range(count)]
        try:
            async with _broker_errors(f"listen on {channel!r}", self._timeout_s * 2):
                await consumer.start()
                consumer.assign(partitions)
                await consumer.seek_to_end(*partitions)
                for tp in partitions:  # resolves the position: later sends are received
                    await consumer.position(tp)
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop()
            raise
        listener = KafkaListener(self, channel, consumer)
        self._listeners.add(listener)
        return listener

    async def _ensure_channel(self, topic: str) -> None:
        if topic not in self._topics:
            await self._create_topic(topic, 1, {"retention.ms": str(CHANNEL_RETENTION_MS)})

    def _forget_listener(self, listener: KafkaListener) -> None:
        self._listeners.discard(listener)

    # ------------------------------------------------------------------ records

    async def put_record(self, scope: str, key: str, body: bytes, ttl_s: float) -> None:
        ttl_ms = max(1, int(ttl_s * 1000))
        if RECORDS_TOPIC not in self._topics:
            configs = {"cleanup.policy": "compact,delete", "retention.ms": str(ttl_ms)}
            await self._create_topic(RECORDS_TOPIC, 1, configs)
        producer = (await self._connected()).producer
        headers = [(TTL_HEADER, str(ttl_ms).encode())]
        async with _broker_errors(f"put record {scope}/{key}", self._timeout_s * 2):
            await producer.send_and_wait(
                RECORDS_TOPIC, body, key=f"{scope}/{key}".encode(), headers=headers
            )

    async def get_record(self, scope: str, key: str) -> bytes | None:
        view = await self._caught_up()
        return view.get(scope, key) if view is not None else None

    async def recent_records(self, scope: str, limit: int) -> list[bytes]:
        view = await self._caught_up()
        return view.recent(scope, limit) if view is not None else []

    async def _caught_up(self) -> _RecordView | None:
        """The record view, read up to the topic's current end; None: no records yet."""
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition

        async with self._records_lock:
            if self._records is None:
                offsets = (await self._connected()).offsets
                async with _broker_errors("records", self._timeout_s):
                    exists = RECORDS_TOPIC in self._topics or await offsets.fresh_count(
                        RECORDS_TOPIC
                    )
                if not exists:
                    return None
                consumer = AIOKafkaConsumer(
                    **self._client_kwargs(),
                    group_id=None,
                    enable_auto_commit=False,
                    max_partition_fetch_bytes=max(1_048_576, self.wire_limit_bytes),
                    request_timeout_ms=self.request_timeout_ms,
                )
                partition = TopicPartition(RECORDS_TOPIC, 0)
                async with _broker_errors("read records", self._timeout_s * 2):
                    await consumer.start()
                    consumer.assign([partition])
                    await consumer.seek_to_beginning(partition)
                self._records = _RecordView(consumer, partition)
            async with _broker_errors("read records", self._timeout_s * 2):
                await self._records.catch_up()
            return self._records


class _RecordView:
    """This process's copy of the records topic: scope -> key -> (expiry ms, body)."""

    def __init__(self, consumer: AIOKafkaConsumer, partition: TopicPartition) -> None:
        self.consumer = consumer
        self.partition = partition
        self.records: dict[str, dict[str, tuple[int, bytes]]] = {}

    async def catch_up(self) -> None:
        tp = self.partition
        end = (await self.consumer.end_offsets([tp]))[tp]
        while await self.consumer.position(tp) < end:
            batches = await self.consumer.getmany(tp, timeout_ms=1_000)
            for record in batches.get(tp, []):
                self._apply(record.key, record.value, record.timestamp, record.headers)

    def _apply(
        self,
        key: bytes | None,
        value: bytes | None,
        timestamp_ms: int,
        headers: Sequence[tuple[str, bytes]],
    ) -> None:
        scope, _, name = (key or b"").decode().partition("/")
        records = self.records.setdefault(scope, {})
        if value is None:
            records.pop(name, None)
            return
        ttl_ms = next((int(v) for k, v in headers if k == TTL_HEADER), 0)
        records[name] = (timestamp_ms + ttl_ms, value)

    def get(self, scope: str, key: str) -> bytes | None:
        expiry_ms, body = self.records.get(scope, {}).get(key, (0, b""))
        return body if expiry_ms > time.time() * 1000 else None

    def recent(self, scope: str, limit: int) -> list[bytes]:
        now_ms = time.time() * 1000
        records = self.records.get(scope, {})
        for stale in [k for k, (expiry_ms, _) in records.items() if expiry_ms <= now_ms]:
            del records[stale]
        return [records[k][1] for k in sorted(records, reverse=True)[:limit]]


class _OffsetReader:
    """The group-less consumer behind backlogs and partition counts.

    Counts come from this client's metadata, which aiokafka refreshes for every tracked
    topic in one request each ``metadata_max_age_ms``. Only topics that exist are tracked
    (checked with the admin client first, and a missing one is not asked about again for
    ``metadata_max_age_ms``): aiokafka logs an error for every tracked topic the broker
    does not know, on every refresh.

    It reaches into ``consumer._client`` for one reason: asked for offsets of topics it
    does not track, aiokafka adds *one* topic per retry and backs off ``retry_backoff_ms``
    in between, so a backlog over a hundred new topics would outlast the request timeout.
    Tracking them up front turns that into a single metadata request.
    """

    def __init__(
        self, consumer: AIOKafkaConsumer, admin: AIOKafkaAdminClient, max_age_s: float
    ) -> None:
        self.consumer = consumer
        self._admin = admin
        self._max_age_s = max_age_s
        self._tracked: set[str] = set()
        self._missing_since: dict[str, float] = {}

    async def counts(self, topics: Iterable[str]) -> dict[str, int]:
        """Partition count per topic; 0 for a topic the broker does not have."""
        wanted = list(dict.fromkeys(topics))
        now = time.monotonic()
        unknown = [
            t
            for t in wanted
            if t not in self._tracked
            and now - self._missing_since.get(t, -self._max_age_s) >= self._max_age_s
        ]
        if unknown:
            await self._track_existing(unknown, now)
        counts = {t: self._count(t) for t in wanted}
        gone = {t for t in wanted if t in self._tracked and counts[t] == 0}
        if gone:  # deleted, or so new the broker's metadata has no leader yet: ask again
            self._tracked -= gone
            await self.consumer._client.set_topics(self._tracked)
        return counts

    async def _track_existing(self, topics: list[str], now: float) -> None:
        described = await self._admin.describe_topics(topics)
        found = {d["topic"] for d in described if d["error_code"] != _UNKNOWN_TOPIC}
        for topic in topics:
            if topic in found:
                self._missing_since.pop(topic, None)
            else:
                self._missing_since[topic] = now
        if found:
            self._tracked |= found
            await self.consumer._client.set_topics(self._tracked)

    def _count(self, topic: str) -> int:
        if topic not in self._tracked:
            return 0
        return len(self.consumer.partitions_for_topic(topic) or ())

    async def fresh_count(self, topic: str) -> int:
        self._missing_since.pop(topic, None)
        if topic in self._tracked:
            await self.consumer._client.force_metadata_update()
        return (await self.counts([topic]))[topic]

    async def await_partitions(self, topic: str, at_least: int) -> int:
        """Poll metadata until ``topic`` shows ``at_least`` partitions (the broker's view lags
        its controller by a moment after a create); the caller bounds the wait."""
        backoff_s = _METADATA_BACKOFF_S
        while (count := await self.fresh_count(topic)) < at_least:
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, _METADATA_BACKOFF_MAX_S)
        return count

    async def forget(self, topic: str) -> None:
        self._missing_since.pop(topic, None)
        if topic in self._tracked:
            self._tracked.discard(topic)
            await self.consumer._client.set_topics(self._tracked)

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[Any, int]:
        offsets: dict[Any, int] = await self.consumer.end_offsets(partitions)
        return offsets

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[Any, int]:
        offsets: dict[Any, int] = await self.consumer.beginning_offsets(partitions)
        return offsets


def _backlog_of(
    partitions: list[TopicPartition],
    end: dict[Any, int],
    begin: dict[Any, int],
    committed: dict[Any, Any],
    group: str,
    local: dict[tuple[str, TopicPartition], list[_PartitionTrack]],
) -> Backlog:
    """Counts for one queue from broker offsets and this process's own fetches.

    Per partition, unfinished work starts at the newer of the broker's committed offset
    and what a local member has since committed: the broker answer may predate a commit
    that completed while it was in transit. Acked-but-uncommitted messages are finished.
    """
    pending = in_flight = 0
    for tp in partitions:
        done = committed.get(tp)
        tracks = local.get((group, tp), ())
        start = max(
            begin[tp],
            done.offset if done is not None else -1,
            *(track.committed for track in tracks),
        )
        flying = sum(len(track.outstanding) for track in tracks)
        acked = sum(track.acked_since(start) for track in tracks)
        pending += max(0, end[tp] - start - flying - acked)
        in_flight += flying
    return Backlog(
        pending=pending,
        in_flight=in_flight,
        partitions=len(partitions),
        appended=sum(end[tp] for tp in partitions),
    )


KAFKA_MIN_SESSION_MS = 6_000
"""Kafka's default ``group.min.session.timeout.ms``: the owners' group's fallback."""


def owners_topic(shards: int) -> str:
    """The controllers' shard topic and group: partitions assigned, never written. The
    count is in the name, as a topic never shrinks."""
    return f"_owners.{shards}"


def channel_topic(channel: str) -> str:
    """The topic behind a channel; characters Kafka forbids become ``_``."""
    return CHANNEL_PREFIX + _INVALID_TOPIC_CHARS.sub("_", channel)


class KafkaSubscription(Subscription):
    """One consumer in the group; tracks what it fetched so acks commit in offset order."""

    def __init__(
        self,
        transport: KafkaTransport,
        queue: str,
        group: str,
        member: str,
        consumer: AIOKafkaConsumer | GroupConsumer,
    ) -> None:
        self.queue, self.group, self.member = queue, group, member
        self.events: deque[RebalanceEvent] = deque(maxlen=1_000)
        self.on_rebalance: Callable[[RebalanceEvent], None] | None = None
        self._transport = transport
        self._consumer = consumer
        self._tracks: dict[TopicPartition, _PartitionTrack] = {}
        self._delayed: dict[asyncio.Task[None], _DelayedNack] = {}
        self._commit_wanted = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._closed = False

    def start_committer(self) -> None:
        self._committer = asyncio.create_task(
            self._commit_loop(), name=f"kafka-commit-{self.group}-{self.member}"
        )

    async def _fetch(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        from aiokafka.errors import ConsumerStoppedError

        if self._closed:
            raise RuntimeError("fetch on a closed subscription")
        if max_messages < 1:
            return []
        try:
            async with _broker_errors(f"fetch from {self.queue!r}", None):
                batches = await self._consumer.getmany(
                    timeout_ms=max(0, int(timeout_s * 1000)), max_records=max_messages
                )
        except ConsumerStoppedError:  # closed while waiting
            return []
        deliveries: list[Delivery] = []
        for tp, records in batches.items():
            track = self._tracks.get(tp)
            if track is None:
                track = self._tracks[tp] = _PartitionTrack(tp, records[0].offset)
            for record in records:
                track.fetched(record.offset)
                deliveries.append(KafkaDelivery(self, track, record))
        return deliveries

    # ------------------------------------------------------------------ acks

    def finish(self, track: _PartitionTrack, offset: int) -> None:
        """Mark ``offset`` done; acks of a partition lost to a rebalance are dropped."""
        if track.live and offset in track.outstanding:
            track.outstanding.discard(offset)
            self._commit_wanted.set()

    async def give_back(self, delivery: KafkaDelivery, delay_s: float) -> None:
        if delay_s <= 0:
            await self._republish(delivery)
            return
        pending = _DelayedNack(delivery, asyncio.Event())
        task = asyncio.create_task(self._republish_later(pending, delay_s))
        self._delayed[task] = pending
        task.add_done_callback(self._delayed_done)

    async def _republish(self, delivery: KafkaDelivery) -> None:
        await self._transport._produce(
            self.queue, delivery.body, delivery.key, delivery.attempt + 1
        )
        self.finish(delivery.track, delivery.offset)

    async def _republish_later(self, pending: _DelayedNack, delay_s: float) -> None:
        """Wait ``delay_s`` unless a rebalance or close hurries it, then republish.

        A failed republish is retried with backoff; if all tries fail the original stays
        in flight and is redelivered, unchanged, when its partition moves or on close.
        """
        with anyio.move_on_after(delay_s):
            await pending.hurry.wait()
        backoff_s = _REPUBLISH_BACKOFF_S
        for _ in range(_REPUBLISH_TRIES - 1):
            try:
                await self._republish(pending.delivery)
            except BrokerUnavailable:
                await asyncio.sleep(backoff_s)
                backoff_s *= 2
            else:
                return
        await self._republish(pending.delivery)

    def _delayed_done(self, task: asyncio.Task[None]) -> None:
        pending = self._delayed.pop(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(
                "kafka: delayed nack of %s failed; it will be redelivered unchanged",
                pending.delivery.id,
                exc_info=task.exception(),
            )

    async def _hurry_nacks(self, partitions: set[TopicPartition] | None) -> None:
        """Publish delayed copies now so their originals can be committed."""
        tasks = [
            task
            for task, pending in self._delayed.items()
            if partitions is None or pending.delivery.track.tp in partitions
        ]
        for task in tasks:
            self._delayed[task].hurry.set()
        if tasks:
            await asyncio.wait(tasks)

    async def _commit_loop(self) -> None:
        """Commit promptly after acks; acks that arrive during a commit share the next one."""
        while True:
            await self._commit_wanted.wait()
            self._commit_wanted.clear()
            await self._commit(self._tracks.values())

    async def _commit(self, tracks: Iterable[_PartitionTrack]) -> None:
        """Commit the contiguous acked position of ``tracks``; failures mean redelivery."""
        from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

        chosen = [
            (track, point)
            for track in tracks
            if track.live and (point := track.commit_point()) > track.committed
        ]
        if not chosen:
            return
        try:
            async with asyncio.timeout(self._transport._timeout_s):
                await self._consumer.commit({track.tp: point for track, point in chosen})
        except TimeoutError:  # aiokafka retries retriable errors forever; a rebalance can't wait
            log.warning("kafka: commit for %s timed out", self.group)
            return
        except (CommitFailedError, IllegalStateError) as exc:
            log.info("kafka: commit for %s lost to a rebalance (%s)", self.group, exc)
            return
        except KafkaError:
            log.warning("kafka: commit for %s failed", self.group, exc_info=True)
            return
        for track, point in chosen:
            track.committed = max(track.committed, point)

    @property
    def tracks(self) -> dict[TopicPartition, _PartitionTrack]:
        return self._tracks

    # ------------------------------------------------------------------ rebalance

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Start of a rebalance: settle delayed nacks, commit acks, forget the partitions."""
        self._record("revoked", revoked)
        await self._hurry_nacks(revoked)
        lost = [track for tp, track in self._tracks.items() if tp in revoked]
        await self._commit(lost)
        for track in lost:
            track.live = False
            if self._tracks.get(track.tp) is track:
                del self._tracks[track.tp]

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._record("assigned", assigned)

    def _record(self, kind: RebalanceKind, partitions: set[TopicPartition]) -> None:
        event = RebalanceEvent(
            time.monotonic(), kind, tuple(sorted(tp.partition for tp in partitions))
        )
        self.events.append(event)
        if self.on_rebalance is not None:
            try:
                self.on_rebalance(event)
            except Exception:  # an observer must not stop the commit before a rebalance
                log.exception("kafka: on_rebalance callback failed")

    async def close(self) -> None:
        """Commit what was acked, then leave the group; unacked work goes to the next owner."""
        if self._closed:
            return
        self._closed = True
        self._transport._forget(self)
        if self._committer is not None:
            self._committer.cancel()
            await asyncio.wait([self._committer])
        try:
            await self._hurry_nacks(None)
            await self._commit(list(self._tracks.values()))
        finally:
            for track in self._tracks.values():
                track.live = False
            self._tracks.clear()
            await self._consumer.stop()


@dataclass(slots=True)
class _PartitionTrack:
    """Offsets one member fetched from one partition during one assignment.

    ``committed`` starts at the first fetched offset (the group's position when the
    partition was assigned) and follows successful commits. ``live`` turns false when
    the partition is revoked: later acks are then ignored and the messages redelivered.
    """

    tp: TopicPartition
    committed: int
    fetched_to: int = -1
    outstanding: set[int] = field(default_factory=set)
    live: bool = True

    def fetched(self, offset: int) -> None:
        self.outstanding.add(offset)
        self.fetched_to = max(self.fetched_to, offset + 1)

    def commit_point(self) -> int:
        """Everything below it is acked: the lowest unacked offset, or past the last fetched."""
        return min(self.outstanding) if self.outstanding else max(self.fetched_to, self.committed)

    def acked_since(self, start: int) -> int:
        """Acked messages at or above ``start`` (every outstanding offset is above it)."""
        return max(0, self.fetched_to - start - len(self.outstanding))


@dataclass(slots=True)
class _DelayedNack:
    delivery: KafkaDelivery
    hurry: asyncio.Event


class KafkaDelivery(Delivery):
    def __init__(
        self, subscription: KafkaSubscription, track: _PartitionTrack, record: ConsumerRecord
    ) -> None:
        self.body = record.value if record.value is not None else b""
        self.id = f"{record.topic}:{record.partition}:{record.offset}"
        self.attempt = _attempt(record.headers)
        self.key: bytes | None = record.key
        self.offset: int = record.offset
        self.track = track
        self._subscription = subscription
        self._finished = False

    async def ack(self) -> None:
        if not self._finished:
            self._finished = True
            self._subscription.finish(self.track, self.offset)

    async def nack(self, delay_s: float = 0.0) -> None:
        """Republish a copy with ``attempt`` + 1; Kafka cannot redeliver in place."""
        if self._finished:
            return
        self._finished = True
        try:
            await self._subscription.give_back(self, delay_s)
        except BaseException:
            self._finished = False  # still in flight: the caller may ack or nack again
            raise


class KafkaListener(Listener):
    """A group-less consumer of a channel topic, positioned at its end when created."""

    def __init__(self, transport: KafkaTransport, channel: str, consumer: AIOKafkaConsumer) -> None:
        self.channel = channel
        self._transport = transport
        self._consumer = consumer
        self._inbox: deque[bytes] = deque()
        self._closed = False

    async def _receive(self, timeout_s: float) -> bytes | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._inbox:
            remaining_s = deadline - loop.time()
            if remaining_s <= 0:
                return None
            async with _broker_errors(f"receive on {self.channel!r}", None):
                batches = await self._consumer.getmany(timeout_ms=int(remaining_s * 1000))
            for records in batches.values():
                self._inbox.extend(r.value if r.value is not None else b"" for r in records)
        return self._inbox.popleft()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._transport._forget_listener(self)
            await self._consumer.stop()


# ---------------------------------------------------------------------- helpers


def _require_aiokafka() -> None:
    try:
        import aiokafka  # noqa: F401
    except ImportError as exc:
        raise TransportNotInstalled("kafka", "kafka") from exc


def _assignor(name: str) -> Any:
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

    return {
        "range": RangePartitionAssignor,
        "roundrobin": RoundRobinPartitionAssignor,
        "sticky": StickyPartitionAssignor,
    }[name]


def _rebalance_listener(subscription: KafkaSubscription) -> Any:
    """aiokafka wants a ``ConsumerRebalanceListener`` instance, defined once it is imported."""
    from aiokafka.abc import ConsumerRebalanceListener

    class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
            await subscription.on_revoked(set(revoked))

        async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
            subscription.on_assigned(set(assigned))

    return _Listener()


async def _quietly(close: Callable[[], Awaitable[None]]) -> None:
    """Run one shutdown step; a broker gone at shutdown must not leave the rest open."""
    try:
        await close()
    except Exception:
        log.warning("kafka: closing failed", exc_info=True)


def _attempt(headers: Sequence[tuple[str, bytes]] | None) -> int:
    for name, value in headers or ():
        if name == ATTEMPT_HEADER:
            with contextlib.suppress(ValueError):
                return max(1, int(value))
    return 1


def _response_error(code: int, what: str) -> TransportError:
    from aiokafka.errors import for_code

    error = for_code(code)
    retryable = getattr(error, "retriable", False)
    cls = BrokerUnavailable if retryable else TransportError
    return cls(f"kafka: {what} failed: {error.__name__}")


async def _send_past_leader_moves(
    producer: AIOKafkaProducer,
    topic: str,
    body: bytes,
    key: bytes | None,
    headers: list[tuple[str, bytes]] | None,
) -> None:
    """Send again while the broker answers that a partition has no leader here.

    The producer retries such an answer only until its batch is ``request_timeout_ms``
    old. A partition whose leader is still being elected, on a new topic or after a
    node died, can take longer than that on a loaded machine. The refusal means
    nothing was written, so sending again cannot duplicate; the caller's deadline
    bounds the whole.
    """
    from aiokafka.errors import LeaderNotAvailableError, NotLeaderForPartitionError

    while True:
        partition = await _writable_partition(producer, topic, key)
        try:
            await producer.send_and_wait(topic, body, key=key, partition=partition, headers=headers)
            return
        except (NotLeaderForPartitionError, LeaderNotAvailableError):
            log.info("kafka: %s has no leader yet; sending again", topic)
            await asyncio.sleep(_METADATA_BACKOFF_MAX_S)


async def _writable_partition(
    producer: AIOKafkaProducer, topic: str, key: bytes | None
) -> int | None:
    """The partition to send to, once its leader is known to be reachable.

    The producer buffers a message for an unreachable leader until its deadline, and a
    buffered message may still be written after the caller was told it failed: so a
    publish whose leader cannot be reached is refused here, before anything is buffered,
    with :class:`BrokerUnavailable`. A connected leader costs a lookup in the client's
    connections; a lost one costs a connect attempt (a dead port refuses at once) and a
    metadata refresh, which finds a leader that moved. Refusal needs evidence: when the
    cluster answers but names no leader (one is being elected) or does not list the topic
    yet, ``None`` hands the choice to the producer, which waits for it within the
    publish deadline as before.
    """
    from aiokafka.structs import TopicPartition

    client = producer.client
    cluster = client.cluster
    unreachable: set[int] = set()
    refreshed = False
    try:
        async with asyncio.timeout(_LEADER_PROBE_S):
            while True:
                partitions = cluster.partitions_for_topic(topic)
                if partitions is None:
                    return None
                shunned = {
                    tp.partition
                    for node in unreachable
                    for tp in cluster.partitions_for_broker(node) or ()
                    if tp.topic == topic
                }
                available = (
                    cluster.available_partitions_for_topic(topic) or set() if key is None else set()
                )
                partition = choose_partition(key, partitions, available, shunned)
                if partition is not None:
                    leader = cluster.leader_for_partition(TopicPartition(topic, partition))
                    if leader is None or leader < 0:
                        return None
                    if leader not in unreachable and await client.ready(leader):
                        return partition
                    unreachable.add(leader)
                    if key is None:
                        continue  # a partition another node leads may do
                elif not unreachable:
                    return None
                if refreshed:
                    raise BrokerUnavailable(
                        f"kafka: publish to {topic!r} refused: its leader is unreachable "
                        f"({_nodes(cluster, unreachable)})"
                    )
                if not await client.force_metadata_update():
                    raise BrokerUnavailable(
                        f"kafka: publish to {topic!r} refused: no broker is reachable "
                        f"({_nodes(cluster, unreachable)} down)"
                    )
                refreshed = True  # the leader may have moved to a live node
    except TimeoutError as exc:
        raise BrokerUnavailable(
            f"kafka: publish to {topic!r} refused: no reachable leader within {_LEADER_PROBE_S} s"
        ) from exc


def _nodes(cluster: Any, nodes: Iterable[int]) -> str:
    """Name nodes by address, as an operator knows them."""
    named = []
    for node in sorted(nodes):
        broker = cluster.broker_metadata(node)
        named.append(f"node {node} at {broker.host}:{broker.port}" if broker else f"node {node}")
    return ", ".join(named)


def choose_partition(
    key: bytes | None,
    partitions: AbstractSet[int],
    available: AbstractSet[int],
    shunned: AbstractSet[int],
) -> int | None:
    """A key's partition is the producer's (murmur2 over all partitions), so a key keeps
    its partition even while that partition's leader is down; a keyless message goes to a
    random partition with a leader, avoiding ``shunned`` ones (led by nodes found
    unreachable). ``None``: no partition qualifies."""
    from aiokafka.partitioner import DefaultPartitioner

    if key is not None:
        return int(DefaultPartitioner()(key, sorted(partitions), []))
    candidates = [p for p in available if p not in shunned]
    return random.choice(candidates) if candidates else None


@contextlib.asynccontextmanager
async def _broker_errors(action: str, timeout_s: float | None) -> AsyncIterator[None]:
    """Bound ``action`` by ``timeout_s`` and translate client errors at the boundary.

    Connection trouble and retriable broker errors become :class:`BrokerUnavailable`
    (retryable); anything else the client raises becomes a plain :class:`TransportError`.
    """
    from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

    try:
        async with asyncio.timeout(timeout_s):
            yield
    except TimeoutError as exc:
        raise BrokerUnavailable(f"kafka: {action} timed out after {timeout_s} s") from exc
    except (KafkaConnectionError, KafkaTimeoutError) as exc:
        raise BrokerUnavailable(f"kafka: {action} failed: {exc}") from exc
    except KafkaError as exc:
        cls = BrokerUnavailable if exc.retriable else TransportError
        raise cls(f"kafka: {action} failed: {exc!r}") from exc
