"""A KIP-848 group member for the Kafka transport, through confluent-kafka.

aiokafka speaks only the classic group protocol, where every join or leave stops the
whole group. KIP-848 (``group.protocol=consumer``, generally available since Kafka 4.0)
moves assignment to the broker and reconciles members one partition at a time, so a
member keeps working on whatever it is not asked to give up. librdkafka is the
well-kept client that implements it; this module wraps its synchronous ``Consumer`` in
the small aiokafka-shaped surface :class:`transports.kafka.KafkaSubscription` drives
(``subscribe``, ``start``, ``getmany``, ``commit``, ``stop``), so offset tracking,
ordered commits and delayed nacks stay in one place for both protocols.

Threads: each member owns two single-thread executors, one for ``consume`` and
``close`` and one for ``commit``. librdkafka runs the rebalance callbacks inside
``consume``; they hand the work to the event loop and wait, and the revocation commits
through the other thread, so neither the loop nor a callback ever blocks on the other.
``consume`` is called with a short timeout in a loop, so a cancelled fetch returns at
once and what the thread still receives is kept for the next fetch.

The broker owns the timings under KIP-848: ``session_timeout_ms``,
``heartbeat_interval_ms`` and ``assignor`` do not apply (the group's
``group.consumer.*`` broker settings do; the heartbeat is 5 s by default).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from broker_sched.errors import BrokerUnavailable, TransportError, TransportNotInstalled

if TYPE_CHECKING:
    from aiokafka.structs import TopicPartition

    from transports.kafka import KafkaSettings

log = logging.getLogger(__name__)

_CONSUME_SLICE_S = 0.05
_CALLBACK_TIMEOUT_S = 60.0
_CLOSE_TIMEOUT_S = 30.0


def require_confluent(extra: str) -> None:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError as exc:
        raise TransportNotInstalled("kafka", extra) from exc


class _Once(logging.Filter):
    """librdkafka warns that the share consumer is a preview each time one starts; a
    scheduler starts one per container, so the warning is passed on once per process."""

    def __init__(self) -> None:
        super().__init__()
        self._seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Preview" not in record.getMessage():
            return True
        seen, self._seen = self._seen, True
        return not seen


_LIBRDKAFKA_LOG = logging.getLogger("transports.kafka.librdkafka")
_LIBRDKAFKA_LOG.addFilter(_Once())


def confluent_config(settings: KafkaSettings) -> dict[str, Any]:
    """Bootstrap and security options in librdkafka's names, from the ``[kafka]`` section."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol,
        "topic.metadata.refresh.interval.ms": settings.metadata_max_age_ms,
        # librdkafka logs to stderr by default; route it through logging instead.
        "logger": _LIBRDKAFKA_LOG,
    }
    if settings.ssl_cafile:
        config["ssl.ca.location"] = settings.ssl_cafile
    if settings.security_protocol.startswith("SASL"):
        config["sasl.mechanism"] = settings.sasl_mechanism or "PLAIN"
        config["sasl.username"] = settings.sasl_username
        password = settings.sasl_password
        config["sasl.password"] = password.get_secret_value() if password else None
    return config


def broker_error(action: str, exc: BaseException) -> TransportError:
    """A librdkafka error as the core's error: retriable ones are :class:`BrokerUnavailable`."""
    from confluent_kafka import KafkaError, KafkaException

    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    if isinstance(error, KafkaError):
        retriable = error.retriable() or error.code() in (
            KafkaError._TRANSPORT,
            KafkaError._ALL_BROKERS_DOWN,
            KafkaError._TIMED_OUT,
        )
        cls = BrokerUnavailable if retriable else TransportError
        return cls(f"kafka: {action} failed: {error.str()}")
    return TransportError(f"kafka: {action} failed: {exc!r}")


@dataclass(frozen=True, slots=True)
class Record:
    """The fields of a record :class:`transports.kafka.KafkaDelivery` reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


class GroupConsumer:
    """One ``group.protocol=consumer`` member behind aiokafka's consumer interface."""

    def __init__(self, settings: KafkaSettings, *, group: str, member: str, **options: Any) -> None:
        require_confluent("kafka")
        instance = settings.group_instance_id
        self._config = {
            **confluent_config(settings),
            "group.id": group,
            "group.protocol": "consumer",
            "client.id": member,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "max.poll.interval.ms": settings.max_poll_interval_ms,
            **options,
        }
        if instance:
            self._config["group.instance.id"] = instance.format(member=member)
        self._poller = ThreadPoolExecutor(1, thread_name_prefix=f"kafka-848-{member}")
        self._committer = ThreadPoolExecutor(1, thread_name_prefix=f"kafka-848-commit-{member}")
        self._inbox: deque[Record] = deque()
        self._topics: list[str] = []
        self._listener: Any = None
        self._consumer: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = threading.Event()

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self._topics, self._listener = topics, listener

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._in(self._poller, self._open)

    def _open(self) -> None:
        from confluent_kafka import Consumer

        try:
            self._consumer = Consumer(self._config)
            self._consumer.subscribe(
                self._topics,
                on_assign=self._assigned,
                on_revoke=self._revoked,
                on_lost=self._revoked,
            )
        except Exception as exc:
            raise broker_error("subscribe", exc) from exc

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        """Records already received, else consume in short slices until ``timeout_ms``."""
        from aiokafka.errors import ConsumerStoppedError

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_ms / 1000
        while not self._inbox:
            if self._stopped.is_set():
                raise ConsumerStoppedError
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await self._in(
                self._poller, self._consume, max_records, min(remaining, _CONSUME_SLICE_S)
            )
        return self._take(max_records)

    def _take(self, max_records: int) -> dict[TopicPartition, list[Any]]:
        from aiokafka.structs import TopicPartition

        batches: dict[TopicPartition, list[Any]] = {}
        while self._inbox and max_records > 0:
            record = self._inbox.popleft()
            batches.setdefault(TopicPartition(record.topic, record.partition), []).append(record)
            max_records -= 1
        return batches

    def _consume(self, max_records: int, timeout_s: float) -> None:
        if self._stopped.is_set() or self._consumer is None:
            return
        try:
            messages = self._consumer.consume(max_records, timeout_s)
        except Exception as exc:
            raise broker_error("fetch", exc) from exc
        for message in messages:
            error = message.error()
            if error is not None:
                if error.fatal():
                    raise broker_error("fetch", _exception(error))
                log.info("kafka: consumer error: %s", error.str())
                continue
            self._inbox.append(
                Record(
                    message.topic(),
                    message.partition(),
                    message.offset(),
                    message.key(),
                    message.value(),
                    list(message.headers() or ()),
                )
            )

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Synchronous commit on the commit thread; a failure is aiokafka's CommitFailedError."""
        await self._in(self._committer, self._commit, offsets)

    def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        from aiokafka.errors import CommitFailedError
        from confluent_kafka import TopicPartition as Partition

        if self._consumer is None or self._stopped.is_set():
            raise CommitFailedError("consumer closed")
        wanted = [Partition(tp.topic, tp.partition, offset) for tp, offset in offsets.items()]
        try:
            results = self._consumer.commit(offsets=wanted, asynchronous=False)
        except Exception as exc:
            raise CommitFailedError(str(exc)) from exc
        failed = [r for r in results or () if r.error is not None]
        if failed:
            raise CommitFailedError(f"{failed[0].error}")

    async def stop(self) -> None:
        """Leave the group (librdkafka revokes first, so the last acks are committed)."""
        if self._consumer is not None and not self._stopped.is_set():
            try:
                with anyio.fail_after(_CLOSE_TIMEOUT_S):
                    await self._in(self._poller, self._close)
            finally:
                self._stopped.set()
        self._stopped.set()
        self._poller.shutdown(wait=False)
        self._committer.shutdown(wait=False)

    def _close(self) -> None:
        consumer = self._consumer
        try:
            consumer.close()
        except Exception as exc:
            log.warning("kafka: closing a consumer failed: %s", exc)

    # ------------------------------------------------------------------ rebalance callbacks

    def _assigned(self, consumer: Any, partitions: list[Any]) -> None:
        """KIP-848 assigns incrementally; the listener is told the whole assignment after
        it, as an eager rebalance would."""
        self._call_back("on_partitions_assigned", [*consumer.assignment(), *partitions])

    def _revoked(self, _: Any, partitions: list[Any]) -> None:
        self._inbox.clear()  # their records go to the next owner, from the committed offset
        self._call_back("on_partitions_revoked", partitions)

    def _call_back(self, name: str, partitions: list[Any]) -> None:
        """Run the listener's coroutine on the loop and wait: a revocation must commit first."""
        from aiokafka.structs import TopicPartition

        loop = self._loop
        if loop is None or loop.is_closed() or self._listener is None:
            return
        tps = {TopicPartition(p.topic, p.partition) for p in partitions}
        future = asyncio.run_coroutine_threadsafe(getattr(self._listener, name)(tps), loop)
        try:
            future.result(_CALLBACK_TIMEOUT_S)
        except Exception:
            log.exception("kafka: %s failed", name)

    async def _in(self, executor: ThreadPoolExecutor, call: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking client call on ``executor``; a cancelled caller does not wait for it."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, call, *args)
        except RuntimeError as exc:  # executor already shut down by stop()
            if self._stopped.is_set():
                from aiokafka.errors import ConsumerStoppedError

                raise ConsumerStoppedError from exc
            raise


def _exception(error: Any) -> BaseException:
    from confluent_kafka import KafkaException

    return KafkaException(error)
