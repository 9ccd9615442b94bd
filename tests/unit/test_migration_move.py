"""``migrate move`` on the memory transport: every unfinished activation copied once.

The target here is an in-memory stand-in with the same promise as the real ones (a
second ``publish_once`` of an id is refused), plus switches to lose a confirmation or stall, so
interruptions land exactly where a crash would hurt most: after the target has the copy,
before the source is acked.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from broker_sched.config import load_settings
from broker_sched.errors import BrokerUnavailable, ConfigError, PayloadTooLarge
from broker_sched.migration import QueuePair, check_distinct, queue_pairs
from broker_sched.migration.move import Mover
from broker_sched.migration.targets import open_target
from broker_sched.model import Action, Activation, decode, encode, now_ms
from transports.base import Transport, dead_letter_queue, dedup_key
from transports.memory import MemoryBroker, MemoryTransport

PAIR = QueuePair("guest/work", "old-guest-work", "guest-work")


class OnceTarget:
    """Appends to a memory queue at most once per id; faults on chosen ids."""

    name = "memory"

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.seen: set[str] = set()
        self.lose_confirmation: set[str] = set()
        self.too_large: set[str] = set()
        self.stall: dict[str, asyncio.Event] = {}
        self.stalled = asyncio.Event()

    async def publish_once(self, queue: str, body: bytes, activation_id: str) -> bool:
        if activation_id in self.too_large:
            raise PayloadTooLarge(len(body), 10)
        if activation_id in self.seen:
            return False
        self.seen.add(activation_id)
        await self.transport.publish(queue, body)
        if activation_id in self.stall:
            self.stalled.set()
            await self.stall[activation_id].wait()
        if activation_id in self.lose_confirmation:
            self.lose_confirmation.discard(activation_id)
            raise BrokerUnavailable("target went away before confirming")
        return True


@pytest.fixture
async def source() -> AsyncIterator[Transport]:
    async with MemoryTransport(MemoryBroker(), ack_wait_s=60.0) as transport:
        yield transport


@pytest.fixture
async def target_transport() -> AsyncIterator[Transport]:
    async with MemoryTransport(MemoryBroker()) as transport:
        yield transport


@pytest.fixture
def target(target_transport: Transport) -> OnceTarget:
    return OnceTarget(target_transport)


async def publish(source: Transport, count: int) -> list[str]:
    ids = []
    for index in range(count):
        activation = Activation(
            namespace="guest", action="work", payload={"i": index}, deadline_ms=now_ms() + 60_000
        )
        await source.publish(PAIR.source, encode(activation))
        ids.append(activation.id)
    return ids


async def copied_ids(transport: Transport, queue: str) -> Counter[str]:
    """Every activation id on ``queue``, counted (drains the queue)."""
    ids: Counter[str] = Counter()
    async with await transport.subscribe(queue, "check", "check") as subscription:
        while deliveries := await subscription.fetch(100, 0.05):
            for delivery in deliveries:
                ids[decode(Activation, delivery.body).id] += 1
                await delivery.ack()
    return ids


def mover(source: Transport, target: OnceTarget, batch: int = 5) -> Mover:
    return Mover(source, target, batch=batch, idle_timeout_s=0.3)


async def test_moves_every_unfinished_activation_and_acks_it_on_the_source(
    source: Transport, target: OnceTarget
) -> None:
    ids = await publish(source, 25)
    async with await source.subscribe(PAIR.source, PAIR.group, "old-proxy") as old:
        finished = await old.fetch(5, 1.0)
        for delivery in finished:
            await delivery.ack()

    done = await mover(source, target).move(PAIR)

    assert done.complete, done
    assert (done.count.moved, done.count.skipped, done.count.failed) == (20, 0, 0)
    assert (await source.backlog(PAIR.source, PAIR.group)).total == 0
    assert await copied_ids(target.transport, PAIR.target) == Counter(ids[5:])


async def test_a_rerun_after_a_lost_confirmation_skips_what_the_target_has(
    source: Transport, target: OnceTarget
) -> None:
    ids = await publish(source, 25)
    target.lose_confirmation.add(ids[6])

    first = await mover(source, target).move(PAIR)
    assert "before confirming" in (first.error or "")
    assert (first.count.moved, first.count.failed) == (9, 1)
    assert (await source.backlog(PAIR.source, PAIR.group)).total == 16

    second = await mover(source, target).move(PAIR)
    assert second.complete, second
    assert (second.count.moved, second.count.skipped) == (15, 1)
    assert await copied_ids(target.transport, PAIR.target) == Counter(ids)


async def test_a_move_cancelled_mid_batch_loses_and_repeats_nothing(
    source: Transport, target: OnceTarget
) -> None:
    ids = await publish(source, 12)
    target.stall[ids[7]] = asyncio.Event()

    moving = asyncio.create_task(mover(source, target).move(PAIR))
    await target.stalled.wait()
    moving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await moving
    del target.stall[ids[7]]

    rerun = await mover(source, target).move(PAIR)
    assert rerun.complete, rerun
    assert rerun.count.skipped >= 1
    assert await copied_ids(target.transport, PAIR.target) == Counter(ids)


async def test_unreadable_and_oversize_activations_are_parked_on_the_source(
    source: Transport, target: OnceTarget
) -> None:
    ids = await publish(source, 3)
    await source.publish(PAIR.source, b"not an activation")
    target.too_large.add(ids[1])

    done = await mover(source, target).move(PAIR)

    assert (done.count.moved, done.count.failed, done.count.left) == (2, 2, 0)
    assert not done.complete
    reasons = []
    async with await source.subscribe(dead_letter_queue(PAIR.source), "dlq", "d") as parked:
        for delivery in await parked.fetch(10, 0.5):
            reasons.append(delivery.body)
    assert len(reasons) == 2
    assert any(b"too large for memory" in reason for reason in reasons)
    assert await copied_ids(target.transport, PAIR.target) == Counter([ids[0], ids[2]])


async def test_work_held_by_another_consumer_is_reported_as_left(
    source: Transport, target: OnceTarget
) -> None:
    await publish(source, 3)
    holder = await source.subscribe(PAIR.source, PAIR.group, "still-running")
    assert len(await holder.fetch(1, 1.0)) == 1

    done = await mover(source, target).move(PAIR)

    assert (done.count.moved, done.count.left) == (2, 1)
    assert "held by other consumers" in (done.error or "")
    await holder.close()


async def test_a_dry_run_counts_and_changes_nothing(source: Transport, target: OnceTarget) -> None:
    await publish(source, 4)
    other = QueuePair("guest/idle", "old-guest-idle", "guest-idle")

    assert await mover(source, target).plan([PAIR, other]) == [4, 0]
    assert (await source.backlog(PAIR.source, PAIR.group)).total == 4
    assert target.seen == set()


async def test_move_all_reports_each_queue_as_it_finishes(
    source: Transport, target: OnceTarget
) -> None:
    await publish(source, 2)
    other = QueuePair("guest/idle", "old-guest-idle", "guest-idle")
    heard: list[str] = []

    done = await mover(source, target).move_all(
        [PAIR, other], on_done=lambda moved: heard.append(moved.pair.source)
    )

    assert sorted(heard) == sorted([PAIR.source, other.source])
    assert [d.count.moved for d in done] == [2, 0]


def test_queue_pairs_map_old_names_to_new_ones() -> None:
    settings = load_settings(
        queue_template="{namespace}-{action}",
        migration={"source_queue_template": "{namespace}.{action}"},
    )
    actions = [Action(name="a"), Action(name="b", namespace="team")]

    pairs = queue_pairs(settings, actions, ["bs-invoker-1-work", "guest.a"])

    assert [(p.action, p.source, p.target, p.group) for p in pairs] == [
        ("guest/a", "guest.a", "guest-a", "guest.a"),
        ("team/b", "team.b", "team-b", "team.b"),
        ("", "bs-invoker-1-work", "bs-invoker-1-work", "bs-invoker-1-work"),
    ]


def test_nothing_to_migrate_is_a_config_error() -> None:
    settings = load_settings()
    with pytest.raises(ConfigError, match="--queue"):
        queue_pairs(settings, [], [])
    with pytest.raises(ConfigError, match="nothing to migrate"):
        check_distinct(settings, "kafka", "kafka")
    renamed = load_settings(migration={"source_queue_template": "old-{namespace}-{action}"})
    check_distinct(renamed, "kafka", "kafka")


def test_dedup_keys_are_the_id_unless_it_is_not_plain_ascii() -> None:
    assert dedup_key("0190abcdef0123456789abcdef012345") == "0190abcdef0123456789abcdef012345"
    odd = dedup_key("with space\r\n")
    assert odd == hashlib.sha256(b"with space\r\n").hexdigest()


async def test_only_targets_that_refuse_duplicates_are_offered() -> None:
    with pytest.raises(ConfigError, match="use drain mode"):
        async with open_target(load_settings(), "kafka"):
            pass


def test_the_cli_refuses_kafka_as_a_move_target(capsys: pytest.CaptureFixture[str]) -> None:
    from broker_sched.cli import main

    code = main(["migrate", "move", "--from", "redis", "--to", "kafka", "--queue", "q"])

    assert code == 2
    assert "use drain mode" in capsys.readouterr().err


def test_the_cli_needs_to_know_the_old_transport(capsys: pytest.CaptureFixture[str]) -> None:
    from broker_sched.cli import main

    assert main(["--transport", "redis", "migrate", "status", "--queue", "q"]) == 2
    assert "--from" in capsys.readouterr().err
