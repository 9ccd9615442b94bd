"""Kafka share groups (KIP-932, "queues for Kafka"): a transport whose members are not
capped by partitions.

Features
    * queue = topic, as in :mod:`transports.kafka` (publishing, topics, resize, channels
      and dead letters are that transport's, on aiokafka); group = share group
      ``<group>-share`` (its own name, so a classic or KIP-848 group of the same name on
      the same cluster never collides with it); a :class:`ShareSubscription` = one
      confluent-kafka ``ShareConsumer`` in explicit acknowledgement mode.
    * any number of members share a partition: each record is *acquired* by one member
      and then accepted (``ack``), released (``nack``) or rejected. Capabilities say
      ``partitioned=False``, ``rebalances=False``: a joining or leaving member stops
      nobody, and :meth:`KafkaShareTransport.max_consumers` is ``None``.
    * ``attempt`` is the broker's delivery count: it counts crashes, lock expiries and
      closes, not only nacks (the classic transport can count nacks only).
    * poison messages: a record delivered more than ``share_delivery_limit`` times is
      dead-lettered (``<queue>.dlq``, with the reason) and rejected, so the broker never
      archives work silently (the group's ``share.delivery.count.limit`` is set one
      higher, so this transport always sees it first).
    * ``backlog``: the share group's state from DescribeShareGroupOffsets v1 (KIP-1226's
      lag: records not yet accepted, released-and-waiting or acquired), minus what this
      process's members hold, which is ``in_flight``; a group that never subscribed has
      everything from the log start pending.
    * when subscribing, the group's ``share.auto.offset.reset`` is set to ``earliest``
      (admin API) so a group created after messages were published still gets them.

Options (``[kafka]``): the connection settings of :mod:`transports.kafka`, plus
``share_max_poll_records`` (records a member acquires per poll),
``share_surplus_hold_ms`` (acquired records nobody fetched yet go back to the group
after this, so one member cannot sit on work others could do) and
``share_delivery_limit``.

Known limits (Kafka 4.3, confluent-kafka 2.16, whose ``ShareConsumer`` is a preview)
    * ``nack(delay_s)``: a share group cannot delay a redelivery, and releasing is
      immediate. A delayed nack keeps the record acquired for the delay, capped at
      ``MAX_NACK_DELAY_S`` (below the default acquisition lock), then releases it;
      meanwhile that member polls nothing new (explicit mode forbids polling before
      every record of the last poll is acknowledged).
    * a member that fetched fewer records than one poll acquired holds the rest for
      ``share_surplus_hold_ms``; released surplus counts as a delivery (``attempt`` + 1).
    * ``in_progress`` cannot renew the acquisition lock: the brokers accept KIP-1222's
      RENEW acknowledgement (Kafka 4.2 and later) but confluent-kafka 2.16's
      ``AcknowledgeType`` has only ACCEPT, RELEASE and REJECT. The group's lock is set to
      ``share_lock_duration_ms`` instead (default 60 s, the broker's default ceiling
      ``group.share.max.record.lock.duration.ms``): a run longer than that is redelivered
      to another member while it still runs, and a member killed outright keeps its
      records until the lock expires or the broker drops its share session (not
      measured yet: ``bench leases`` did not get as far as the kill on share groups).
    * the first records reach a new member about one share-group heartbeat (5 s,
      broker setting ``group.share.heartbeat.interval.ms``) after it subscribes.
    * ``in_flight`` is what this process's members hold; records acquired in other
      processes count as pending. ``oldest_age_s`` is not reported.
    * the client is synchronous: each member runs its consumer on a thread of its own,
      and polls in 50 ms slices so acknowledgements never wait long behind a poll. An
      ack is recorded locally and reaches the broker with the member's next poll, or
      within 250 ms, or before a backlog read (which commits and waits), whichever is
      first; a release or reject is committed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import anyio

from broker_sched.errors import BrokerUnavailable, TransportError
from transports.base import Backlog, Capabilities, Delivery, Subscription
from transports.kafka import KafkaSettings, KafkaTransport, _broker_errors
from transports.kafka_consumer import broker_error, confluent_config, require_confluent

if TYPE_CHECKING:
    from broker_sched.config import Settings

log = logging.getLogger(__name__)

GROUP_SUFFIX = "-share"
MAX_NACK_DELAY_S = 20.0
_POLL_SLICE_S = 0.05
_FLUSH_EVERY_S = 0.25
_CLOSE_TIMEOUT_S = 30.0
_ACCEPT, _RELEASE, _REJECT = 1, 2, 3  # confluent_kafka.AcknowledgeType values


def share_group(group: str) -> str:
    return f"{group}{GROUP_SUFFIX}"


class KafkaShareTransport(KafkaTransport):
    name = "kafka-share"
    capabilities = Capabilities(partitioned=False, rebalances=False, assigns_shards=True)

    def __init__(
        self,
        kafka: KafkaSettings | None = None,
        *,
        max_message_bytes: int = 1_048_576,
        request_timeout_ms: int = 5_000,
    ) -> None:
        require_confluent("kafka")
        super().__init__(
            kafka, max_message_bytes=max_message_bytes, request_timeout_ms=request_timeout_ms
        )
        self.redelivery_window_s = self.settings.share_lock_duration_ms / 1000
        self._members: set[ShareSubscription] = set()
        self._configured: set[str] = set()
        self._admin: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings.section(KafkaSettings), max_message_bytes=settings.max_payload_bytes)

    async def close(self) -> None:
        for member in list(self._members):
            try:
                await member.close()
            except Exception:
                log.warning("kafka-share: closing a member failed", exc_info=True)
        self._admin = None
        await super().close()

    async def max_consumers(self, queue: str) -> int | None:
        return None

    # ------------------------------------------------------------------ queues

    async def subscribe(  # type: ignore[override]  # a share member, not a group consumer
        self, queue: str, group: str, member: str
    ) -> ShareSubscription:
        await self._ensure_topic(queue)
        await self._configure(share_group(group))
        subscription = ShareSubscription(self, queue, group, member)
        await subscription.start()
        self._members.add(subscription)
        return subscription

    async def _configure(self, group: str) -> None:
        """Earliest reset, a delivery limit above ours and the acquisition lock, set once
        per group (admin API)."""
        if group in self._configured:
            return
        from confluent_kafka.admin import AdminClient
        from confluent_kafka.admin._config import AlterConfigOpType, ConfigEntry, ConfigResource

        if self._admin is None:
            self._admin = AdminClient(confluent_config(self.settings))
        values = {
            "share.auto.offset.reset": "earliest",
            "share.delivery.count.limit": str(self.settings.share_delivery_limit + 1),
            "share.record.lock.duration.ms": str(self.settings.share_lock_duration_ms),
        }
        entries = [
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
            for k, v in values.items()
        ]
        resource = ConfigResource(ConfigResource.Type.GROUP, group, incremental_configs=entries)
        futures = self._admin.incremental_alter_configs([resource], request_timeout=self._timeout_s)
        try:
            async with asyncio.timeout(self._timeout_s * 2):
                await asyncio.wrap_future(futures[resource])
        except TimeoutError as exc:
            raise BrokerUnavailable(f"kafka: configuring share group {group!r} timed out") from exc
        except Exception as exc:
            raise broker_error(f"configure share group {group!r}", exc) from exc
        self._configured.add(group)

    def _forget_member(self, member: ShareSubscription) -> None:
        self._members.discard(member)

    # ------------------------------------------------------------------ backlog

    async def backlogs(self, pairs: Sequence[tuple[str, str]]) -> list[Backlog]:
        """Share-group state for every group (one request each, concurrent), log offsets
        for groups the broker has no state for, and this process's members' holdings."""
        if not pairs:
            return []
        from aiokafka.structs import TopicPartition

        wanted = set(pairs)
        await asyncio.gather(*(m.flush() for m in self._members if (m.queue, m.group) in wanted))
        offsets = (await self._connected()).offsets
        async with _broker_errors("backlog", self._timeout_s):
            counts = await offsets.counts(q for q, _ in pairs)
        every = [TopicPartition(t, p) for t, n in counts.items() for p in range(n)]
        if not every:
            return [
                Backlog(0, 0, partitions=self.settings.default_partitions, appended=0)
                for _ in pairs
            ]
        by_group: dict[str, dict[str, int]] = {}
        for queue, group in pairs:
            if counts[queue]:
                by_group.setdefault(share_group(group), {})[queue] = counts[queue]
        groups = list(by_group)
        async with _broker_errors("backlog", self._timeout_s * 2):
            end, begin, *states = await asyncio.gather(
                offsets.end_offsets(every),
                offsets.beginning_offsets(every),
                *(self._group_state(g, by_group[g]) for g in groups),
            )
        state_of = dict(zip(groups, states, strict=True))
        result = []
        for queue, group in pairs:
            count = counts[queue]
            if not count:
                result.append(
                    Backlog(0, 0, partitions=self.settings.default_partitions, appended=0)
                )
                continue
            state = state_of.get(share_group(group), {})
            unfinished = 0
            for p in range(count):
                tp = TopicPartition(queue, p)
                known = state.get((queue, p))
                if known is not None and known.lag >= 0:
                    unfinished += known.lag
                elif known is not None and known.start_offset >= 0:
                    unfinished += max(0, end[tp] - max(known.start_offset, begin[tp]))
                else:
                    unfinished += max(0, end[tp] - begin[tp])
            held = self._held(queue, group)
            appended = sum(end[TopicPartition(queue, p)] for p in range(count))
            result.append(
                Backlog(max(0, unfinished - held), held, partitions=count, appended=appended)
            )
        return result

    async def backlog(self, queue: str, group: str) -> Backlog:
        return (await self.backlogs([(queue, group)]))[0]

    async def _group_state(self, group: str, topics: dict[str, int]) -> dict[Any, Any]:
        from aiokafka.errors import for_code

        from transports.kafka_share_state import DescribeShareGroupOffsets, partition_states

        admin = (await self._connected()).admin
        node = self._coordinators.get(group)
        if node is None:
            node = self._coordinators[group] = await admin.find_coordinator(group)
        # aiokafka's admin client has no call for API 90; its node sender does the rest.
        response = await admin._send_request_to_node(node, DescribeShareGroupOffsets(group, topics))
        error, states = partition_states(response)
        if error not in (0, _GROUP_ID_NOT_FOUND):
            self._coordinators.pop(group, None)
            raise for_code(error)()
        return states

    def _held(self, queue: str, group: str) -> int:
        return sum(m.handed_out for m in self._members if (m.queue, m.group) == (queue, group))


_GROUP_ID_NOT_FOUND = 69


@dataclass(slots=True)
class _Acquired:
    message: Any
    at_s: float


class ShareSubscription(Subscription):
    """One share-group member; its ``ShareConsumer`` lives on a thread of its own."""

    def __init__(self, transport: KafkaShareTransport, queue: str, group: str, member: str) -> None:
        self.queue, self.group, self.member = queue, group, member
        self._transport = transport
        settings = transport.settings
        fetch_bytes = max(1_048_576, transport.wire_limit_bytes)
        self._config = {
            **confluent_config(settings),
            "group.id": share_group(group),
            "client.id": member,
            "share.acknowledgement.mode": "explicit",
            "max.poll.records": settings.share_max_poll_records,
            "max.partition.fetch.bytes": fetch_bytes,
            "fetch.max.bytes": fetch_bytes * 2,
            "max.poll.interval.ms": settings.max_poll_interval_ms,
        }
        self._limit = settings.share_delivery_limit
        self._hold_s = settings.share_surplus_hold_ms / 1000
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"kafka-share-{member}")
        self._consumer: Any = None
        self._surplus: deque[_Acquired] = deque()
        self._out: dict[tuple[int, int], ShareDelivery] = {}
        self._finished = asyncio.Event()
        self._delayed: set[asyncio.Task[None]] = set()
        self._releaser: asyncio.Task[None] | None = None
        self._closed = False
        self._unsent = False

    @property
    def handed_out(self) -> int:
        return len(self._out)

    async def start(self) -> None:
        await self._in_thread(self._open)
        self._releaser = asyncio.create_task(
            self._housekeeping(), name=f"kafka-share-housekeeping-{self.member}"
        )

    def _open(self) -> None:
        from confluent_kafka import ShareConsumer

        try:
            self._consumer = ShareConsumer(self._config)
            self._consumer.subscribe([self.queue])
        except Exception as exc:
            raise broker_error(f"subscribe to {self.queue!r}", exc) from exc

    # ------------------------------------------------------------------ fetch

    async def _fetch(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        if self._closed:
            raise RuntimeError("fetch on a closed subscription")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            deliveries = await self._take(max_messages)
            if deliveries or max_messages < 1:
                return deliveries
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            if self._out or self._surplus:
                # Explicit mode: every record of the last poll is acknowledged before the next.
                self._finished.clear()
                with anyio.move_on_after(min(remaining, _POLL_SLICE_S)):
                    await self._finished.wait()
                continue
            await self._in_thread(self._poll, min(remaining, _POLL_SLICE_S))

    def _poll(self, timeout_s: float) -> None:
        """Poll on the consumer's thread, keeping what arrives even if the fetch was
        cancelled meanwhile: an acquired record must be acknowledged before the next poll."""
        try:
            messages = self._consumer.poll(timeout_s)  # also sends recorded acknowledgements
            self._unsent = False
        except Exception as exc:
            raise broker_error(f"fetch from {self.queue!r}", exc) from exc
        now = time.monotonic()
        for message in messages:
            error = message.error()
            if error is None:
                self._surplus.append(_Acquired(message, now))
            elif error.fatal():
                raise broker_error(f"fetch from {self.queue!r}", Exception(error.str()))
            else:
                log.info("kafka-share: consumer error: %s", error.str())

    async def _take(self, max_messages: int) -> list[Delivery]:
        """Hand out acquired records; poison ones are dead-lettered and rejected instead."""
        deliveries: list[Delivery] = []
        while self._surplus and len(deliveries) < max_messages:
            message = self._surplus.popleft().message
            delivery = ShareDelivery(self, message)
            self._out[delivery.key] = delivery
            if delivery.attempt > self._limit:
                reason = f"delivered {delivery.attempt} times (limit {self._limit}), never accepted"
                await self._transport.dead_letter(self.queue, delivery.body, reason)
                await self.acknowledge(delivery, _REJECT)
                continue
            deliveries.append(delivery)
        return deliveries

    # ------------------------------------------------------------------ acknowledgements

    async def acknowledge(self, delivery: ShareDelivery, kind: int) -> None:
        """Record one acknowledgement on the consumer's thread.

        An accept is only recorded: the next poll carries it to the broker, or
        :meth:`flush` (before a backlog read, and every ``_FLUSH_EVERY_S``) commits it. A
        release or reject is committed at once, so the record is free for others now.
        """
        try:
            await self._in_thread(self._acknowledge, [(delivery.message, kind)], kind != _ACCEPT)
        finally:  # a cancelled caller does not stop the thread: the record is acknowledged
            self._out.pop(delivery.key, None)
            self._finished.set()

    def _acknowledge(self, acks: list[tuple[Any, int]], commit: bool = True) -> None:
        try:
            for message, kind in acks:
                self._consumer.acknowledge(message, kind)
            self._unsent = True
            if commit:
                self._commit()
        except Exception as exc:
            raise broker_error(f"acknowledge on {self.queue!r}", exc) from exc

    def _commit(self) -> None:
        self._consumer.commit_sync(self._transport._timeout_s)
        self._unsent = False

    async def flush(self) -> None:
        """Commit recorded acknowledgements and wait for the broker to have them."""
        if self._unsent and not self._closed:
            await self._in_thread(self._flush)

    def _flush(self) -> None:
        if self._unsent:
            try:
                self._commit()
            except Exception as exc:
                raise broker_error(f"acknowledge on {self.queue!r}", exc) from exc

    def release_later(self, delivery: ShareDelivery, delay_s: float) -> None:
        task = asyncio.create_task(self._release_after(delivery, min(delay_s, MAX_NACK_DELAY_S)))
        self._delayed.add(task)
        task.add_done_callback(self._delayed.discard)

    async def _release_after(self, delivery: ShareDelivery, delay_s: float) -> None:
        try:
            await asyncio.sleep(delay_s)
        finally:
            if not self._closed:
                await self.acknowledge(delivery, _RELEASE)

    async def _housekeeping(self) -> None:
        """Give back records nobody fetched within the hold, so other members can take
        them, and commit accepts that no poll has carried to the broker."""
        while True:
            await asyncio.sleep(_FLUSH_EVERY_S)
            try:
                await self.flush()
            except TransportError:
                log.warning("kafka-share: committing acknowledgements failed", exc_info=True)
            cutoff = time.monotonic() - self._hold_s
            stale = []
            while self._surplus and self._surplus[0].at_s <= cutoff:
                stale.append(self._surplus.popleft().message)
            if stale:
                try:
                    await self._in_thread(self._acknowledge, [(m, _RELEASE) for m in stale])
                except TransportError:
                    log.warning("kafka-share: releasing surplus failed", exc_info=True)
                self._finished.set()

    # ------------------------------------------------------------------ close

    async def close(self) -> None:
        """Release everything still held, commit, and leave the share group."""
        if self._closed:
            return
        self._closed = True
        self._transport._forget_member(self)
        tasks = [t for t in (self._releaser, *self._delayed) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        held = [a.message for a in self._surplus] + [d.message for d in self._out.values()]
        self._surplus.clear()
        self._out.clear()
        try:
            if held:
                with contextlib.suppress(TransportError):
                    await self._in_thread(self._acknowledge, [(m, _RELEASE) for m in held])
            with anyio.fail_after(_CLOSE_TIMEOUT_S):
                await self._in_thread(self._close)
        finally:
            self._thread.shutdown(wait=False)

    def _close(self) -> None:
        try:
            self._consumer.close()
        except Exception as exc:
            log.warning("kafka-share: closing a consumer failed: %s", exc)

    async def _in_thread(self, call: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, call, *args)


class ShareDelivery(Delivery):
    def __init__(self, subscription: ShareSubscription, message: Any) -> None:
        self.message = message
        self.body = message.value() or b""
        self.key = (message.partition(), message.offset())
        self.id = f"{message.topic()}:{message.partition()}:{message.offset()}"
        self.attempt = max(1, message.delivery_count() or 1)
        self._subscription = subscription
        self._finished = False

    async def ack(self) -> None:
        await self._finish(_ACCEPT)

    async def nack(self, delay_s: float = 0.0) -> None:
        """Release for redelivery; a delay holds the record first (see module docstring)."""
        if self._finished:
            return
        if delay_s > 0:
            self._finished = True
            self._subscription.release_later(self, delay_s)
            return
        await self._finish(_RELEASE)

    async def _finish(self, kind: int) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            await self._subscription.acknowledge(self, kind)
        except BaseException:
            self._finished = False
            raise
