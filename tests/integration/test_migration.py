"""Migrating a live deployment between real brokers loses and repeats no activation.

Each test runs an "old" deployment (a controller and an invoker, each a stack of its
own, as separate processes would be) under a steady load, stops its invoker so work
piles up on the old broker, then brings up the "new" deployment on the other broker and
moves the load over to it. What was left behind is finished either by drain mode (the
new invoker runs it and replies over the old broker, where the old controller waits) or
by ``migrate move`` (copied to the new broker, interrupted once and run again; the new
controller keeps the old one's id, so the results come back to it).

"Exactly one result" is checked where results are reported: every activation id has a
result at exactly one controller, and a controller behind Redis or NATS never received a
second copy of one. Behind Kafka a second copy can arrive in normal operation (a
rebalance redelivers what a member had fetched but not committed); the controller drops
it, which is what "one result per activation" means there.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Self

import pytest
from brokers import ADDRESS_FIELDS
from embedded import eventually

from broker_sched.config import Settings
from broker_sched.errors import BrokerUnavailable
from broker_sched.migration import commands, queue_pairs
from broker_sched.migration.move import MoveCount, Mover, MoveTarget
from broker_sched.migration.targets import open_target
from broker_sched.model import Action, Activation, Status, encode, now_ms
from broker_sched.scheduler.controller import Controller
from broker_sched.stack import Stack
from broker_sched.topology import invoker_control_queue
from transports.redis_streams import MARKER_PREFIX, stream_key
from transports.registry import transport_from_settings

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ACTIONS = [Action(name=f"mig{i}", max_containers=1) for i in range(3)]
RATE_PER_S = 40.0
CALL_TIMEOUT_S = 30.0

SettingsFactory = Callable[..., Settings]


class Load:
    """Invocations at a steady rate through whichever controller is current.

    Starts paused; ``switch(controller)`` points it at a controller, ``switch(None)``
    pauses it again. :meth:`issued` waits until so many calls were made in all.
    """

    def __init__(self, *, blocking: bool) -> None:
        self.blocking = blocking
        self.calls: list[tuple[str, asyncio.Task[Any]]] = []
        self._controller: Controller | None = None
        self._resumed = asyncio.Event()
        self._progress = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tasks = [task for _, task in self.calls]
        if self._task is not None:
            tasks.append(self._task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def switch(self, controller: Controller | None) -> None:
        self._controller = controller
        if controller is None:
            self._resumed.clear()
        else:
            self._resumed.set()

    async def issued(self, count: int) -> None:
        async with self._progress:
            await self._progress.wait_for(lambda: len(self.calls) >= count)

    async def finish(self) -> list[tuple[str, Any]]:
        """Stop calling; each call's controller id and outcome (its result, or its
        activation id for a non-blocking call)."""
        self.switch(None)
        outcomes = await asyncio.gather(*(task for _, task in self.calls))
        return [(owner, outcome) for (owner, _), outcome in zip(self.calls, outcomes, strict=True)]

    async def _run(self) -> None:
        for index in range(1_000_000):
            await self._resumed.wait()
            controller = self._controller
            assert controller is not None
            action = ACTIONS[index % len(ACTIONS)]
            call = controller.invoke(
                action.name, {"i": index}, blocking=self.blocking, timeout_s=CALL_TIMEOUT_S
            )
            self.calls.append((controller.id, asyncio.create_task(call)))
            async with self._progress:
                self._progress.notify_all()
            await asyncio.sleep(1 / RATE_PER_S)


@pytest.fixture
def uid() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def deployment(broker_settings: SettingsFactory, uid: str) -> SettingsFactory:
    """``deployment(name, other, role, **overrides)``: settings on broker ``name`` that also
    reach broker ``other``, with this test's own queue names and invoker ids."""

    def build(name: str, other: str, role: str, **overrides: Any) -> Settings:
        other_address = getattr(getattr(broker_settings(other), other), ADDRESS_FIELDS[other])
        return broker_settings(
            name,
            queue_template=f"m{uid}-{{namespace}}-{{action}}",
            runtime="simulated",
            actions=ACTIONS,
            simulated={"create_ms": (50.0, 100.0), "run_ms": (10.0, 10.0)},
            invoker={
                "id": f"{role}{uid}",
                "heartbeat_interval_s": 0.3,
                "keep_alive_s": 30.0,
                "pause_grace_s": 30.0,
                "fetch_timeout_s": 0.2,
            },
            scheduler={"create_timeout_s": 5.0},
            **{other: {ADDRESS_FIELDS[other]: other_address}},
            **overrides,
        )

    return build


@pytest.fixture
async def cleanup(uid: str) -> AsyncIterator[list[Settings]]:
    """Settings appended here get their queues (and Redis move markers) deleted at the end."""
    made: list[Settings] = []
    yield made
    for settings in made:
        async with transport_from_settings(settings) as transport:
            for pair in queue_pairs(settings, settings.actions, []):
                await transport.delete(pair.target)
            await transport.delete(invoker_control_queue(invoker_id(settings)))
        if settings.transport == "redis":
            await forget_markers(settings.redis.url, f"{MARKER_PREFIX}{{{stream_key('m' + uid)}")


async def forget_markers(url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
    finally:
        await client.aclose()


def invoker_id(settings: Settings) -> str:
    """The id of a deployment's one invoker."""
    return settings.invoker.id


async def leave_work_behind(old: Settings, controller: Controller, load: Load, calls: int) -> None:
    """Run the old invoker under ``load`` for half the ``calls``, stop it, and keep the
    load on ``controller`` until all ``calls`` were made: those pile up on the broker."""
    async with Stack(old, role="invoker") as invokers:
        async with asyncio.timeout(30):
            await controller.cluster.wait_for_invokers({i.id for i in invokers.invokers})
        load.switch(controller)
        await load.issued(calls // 2)
    await load.issued(calls)


def assert_one_result_each(calls: list[tuple[str, Any]], *controllers: Controller) -> None:
    expected = {call if isinstance(call, str) else call.activation_id for _, call in calls}
    reported = [set(controller.results) for controller in controllers]
    assert len(expected) == len(calls)
    assert set().union(*reported) >= expected, "an activation has no result"
    for index, one in enumerate(reported):
        for other in reported[index + 1 :]:
            assert not one & other & expected, "an activation has results at two controllers"
    for controller in controllers:
        if not controller.transport.capabilities.rebalances:
            assert controller.timeline.counts["duplicate_result"] == 0, "an activation ran twice"
        mine = expected & set(controller.results)
        assert {controller.results[i].status for i in mine} <= {Status.SUCCESS}


@pytest.mark.parametrize(
    ("source", "target"),
    [("kafka", "redis"), ("kafka", "nats"), ("redis", "kafka")],
    ids=["kafka-to-redis", "kafka-to-nats", "rollback-redis-to-kafka"],
)
async def test_drain_mode_under_live_load(
    source: str, target: str, deployment: SettingsFactory, cleanup: list[Settings]
) -> None:
    old = deployment(source, target, "old")
    new = deployment(
        target,
        source,
        "new",
        migration={"drain_from": source, "drain_quiet_s": 1.0, "drain_check_interval_s": 0.2},
    )
    cleanup += [old, new]

    async with (
        Stack(old, role="controller") as old_side,
        Load(blocking=True) as load,
    ):
        assert old_side.controller is not None
        await leave_work_behind(old, old_side.controller, load, calls=80)
        async with Stack(new) as new_side:
            assert new_side.controller is not None
            load.switch(new_side.controller)
            await load.issued(160)
            calls = await load.finish()
            drainer = new_side.invokers[0].drainer
            assert drainer is not None
            async with asyncio.timeout(60):
                await drainer.finished.wait()
            beat = new_side.invokers[0].heartbeat()
            assert beat.draining == dict.fromkeys((a.fqn for a in ACTIONS), 0)

    assert_one_result_each(calls, old_side.controller, new_side.controller)
    drained = [
        result
        for owner, result in calls
        if owner == old_side.controller.id and result.invoker_id == new_side.invokers[0].id
    ]
    assert drained, "the old broker had work left for drain mode"
    assert new_side.timeline.counts["drain_finished"] == len(ACTIONS)
    out = io.StringIO()
    assert await commands.status(new, out=out) == 0, out.getvalue()
    assert "(drained)" in out.getvalue()


class LosesOneConfirmation:
    """The real target, except that the ``nth`` copy is made but its confirmation lost:
    the worst moment for an interruption (the target has it, the source is not acked)."""

    def __init__(self, inner: MoveTarget, nth: int) -> None:
        self.name = inner.name
        self.inner = inner
        self.nth = nth
        self.puts = 0

    async def publish_once(self, queue: str, body: bytes, message_id: str) -> bool:
        self.puts += 1
        number = self.puts
        copied = await self.inner.publish_once(queue, body, message_id)
        if number == self.nth:
            raise BrokerUnavailable("connection lost before the confirmation arrived")
        return copied


@pytest.mark.parametrize("target", ["redis", "nats"])
async def test_move_under_live_load_with_an_interruption(
    target: str, deployment: SettingsFactory, cleanup: list[Settings], uid: str
) -> None:
    same_id = f"ctl-{uid}"
    old = deployment("kafka", target, "old", controller_id=same_id)
    new = deployment(target, "kafka", "new", controller_id=same_id)
    cleanup += [old, new]

    async with (
        Load(blocking=False) as load,
        Stack(old, role="controller") as old_side,
    ):
        assert old_side.controller is not None
        await leave_work_behind(old, old_side.controller, load, calls=100)
        load.switch(None)
        published = [await task for _, task in load.calls]

        async with Stack(new) as new_side:
            assert new_side.controller is not None
            load.switch(new_side.controller)
            async with (
                transport_from_settings(old, name="kafka") as kafka,
                open_target(new, target) as sink,
            ):
                flaky = LosesOneConfirmation(sink, nth=15)
                mover = Mover(kafka, flaky, batch=10, idle_timeout_s=10.0)
                first = await mover.move_all(queue_pairs(new, new.actions, []))
            out = io.StringIO()
            rerun = await commands.move(new, source="kafka", batch=10, out=out)
            await load.issued(len(load.calls) + 40)
            calls = await load.finish()
            expected = {activation_id for _, activation_id in calls}
            results = new_side.controller.results
            earlier = set(old_side.controller.results)
            await eventually(lambda: expected <= earlier | set(results), 60)

    assert_one_result_each(calls, old_side.controller, new_side.controller)
    left_on_kafka = set(published) - set(old_side.controller.results)
    assert left_on_kafka, "the old broker had work left to move"
    interrupted = [queue for queue in first if queue.error]
    assert len(interrupted) == 1
    assert "confirmation" in (interrupted[0].error or "")
    assert rerun == 0, out.getvalue()
    first_total = MoveCount()
    for queue in first:
        first_total += queue.count
    second = totals(out.getvalue())
    assert first_total.failed == 1
    # Kafka commits up to the lowest unconfirmed offset, so the re-run reads the lost
    # one again and any acked after it in its batch: all of them skipped, none copied.
    assert second["skipped"] >= 1, out.getvalue()
    assert first_total.moved + second["moved"] + 1 == len(left_on_kafka)


def totals(output: str) -> dict[str, int]:
    """``moved=3 skipped=1 ...`` from the total line of ``migrate move``."""
    line = next(line for line in output.splitlines() if line.startswith("total:"))
    pairs = (word.split("=") for word in line.split() if "=" in word)
    return {key: int(value) for key, value in pairs}


@pytest.mark.parametrize("target", ["redis", "nats"])
async def test_a_target_refuses_a_second_copy_of_an_activation(
    target: str, deployment: SettingsFactory, cleanup: list[Settings]
) -> None:
    settings = deployment(target, "kafka", "t")
    cleanup.append(settings)
    queue = settings.queue_name("guest", ACTIONS[0].name)
    activation = Activation(namespace="guest", action=ACTIONS[0].name, deadline_ms=now_ms())

    async with open_target(settings, target) as sink:
        assert await sink.publish_once(queue, encode(activation), activation.id)
        assert not await sink.publish_once(queue, encode(activation), activation.id)

    async with transport_from_settings(settings) as transport:
        assert (await transport.backlog(queue, queue)).total == 1
