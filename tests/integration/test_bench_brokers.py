"""The benchmark harness against real brokers: the raw floor everywhere, and a quick
rebalance on Kafka, whose pauses are the reason the scenario exists.

Brokers come from ``BROKER_SCHED_TEST_<BROKER>``, else the native ones on their default
ports when something listens there, else the shared address fixtures (a container, or
skip). Every run uses fresh queue names and deletes them.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from brokers import BROKERS, reachable, settings_for

from broker_sched.bench import floor, rebalance
from broker_sched.bench.context import BenchContext
from broker_sched.bench.processes import split_side
from broker_sched.bench.progress import Progress
from broker_sched.bench.raw import run_raw
from broker_sched.config import Settings

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

NATIVE = {
    "kafka": "127.0.0.1:9092",
    "redis": "redis://127.0.0.1:6379/0",
    "nats": "nats://127.0.0.1:4222",
}


@pytest.fixture
def settings_of(broker_settings: Callable[..., Settings]) -> Callable[[str], Settings]:
    def build(name: str) -> Settings:
        if not os.environ.get(BROKERS[name].address_env) and reachable(NATIVE[name]):
            return settings_for(name, NATIVE[name])
        return broker_settings(name)

    return build


@pytest.mark.parametrize("name", ["kafka", "redis", "nats"])
async def test_raw_floor(name: str, settings_of: Callable[[str], Settings]) -> None:
    result = await run_raw(
        settings_of(name),
        users=4,
        consumers=4,
        run_ms=2.0,
        warmup_s=0.5,
        duration_s=1.5,
        interval_s=0.25,
        progress=Progress(None),
    )
    summary = result.summary
    assert summary.errors == {}
    assert summary.tps > 50
    assert 2.0 < summary.latency_ms["p50"] < 500
    assert result.broker


async def test_quick_rebalance_on_kafka(settings_of: Callable[[str], Settings]) -> None:
    ctx = BenchContext(settings_of("kafka"), ["kafka"], quick=True, progress=Progress(None))
    report = await rebalance.run(ctx)
    runs = report.data["transports"]["kafka"]
    assert set(runs) == {"dynamic", "static", "kip848"}
    add, remove = runs["dynamic"]["operations"]
    assert add["rebalances"] >= 1, "a consumer joining a Kafka group triggers a rebalance"
    assert remove["rebalances"] >= 1, "so does one leaving it"
    kinds = {event["kind"] for event in runs["dynamic"]["events"]}
    assert {"rebalance_started", "rebalance_finished", "consumer_added"} <= kinds
    static_remove = runs["static"]["operations"][1]
    session_s = ctx.base.kafka.session_timeout_ms / 1000
    assert static_remove["rebalances"] == 0, "a static member leaves without a LeaveGroup"
    assert static_remove["max_ms"] > 1000 * (session_s - 3), "its partitions wait for the session"
    assert runs["static"]["unfinished"] == 0
    assert runs["kip848"]["unfinished"] == 0


@pytest.mark.parametrize("name", ["kafka", "redis", "nats"])
async def test_overhead_floor_and_scheduled_path(
    name: str, settings_of: Callable[[str], Settings]
) -> None:
    plan = floor.FloorPlan(
        (4,),
        warmup_s=1.0,
        duration_s=1.0,
        invoker_processes=(),
        footprint_actions=0,
        rebalance_warmup_s=1.0,
    )
    [row] = await floor.measure_transport(settings_of(name), name, plan, Progress(None))
    for side in (row.bare, row.scheduled):
        assert side.errors == 0
        assert side.tps > 20
        assert side.cpu_s_per_1k > 0
    assert row.tps_ratio > 0


async def test_invokers_in_worker_processes(settings_of: Callable[[str], Settings]) -> None:
    """`run --role invoker --workers 2` beside a controller-only stack serves activations."""
    result = await split_side(settings_of("redis"), "redis", 4, 2, warmup_s=1.0, duration_s=1.0)
    assert result.errors == 0
    assert result.tps > 20
    assert result.workers == 2
