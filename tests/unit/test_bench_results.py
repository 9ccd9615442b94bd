"""The typed results hold the recorder's Summary once, and ``results.json`` still lists its
fields inline, under the keys and in the order it always had."""

from __future__ import annotations

from dataclasses import replace

from broker_sched.bench.cell import CellResult
from broker_sched.bench.raw import FloorResult
from broker_sched.bench.recorder import Summary

CELL_KEYS = [
    "label",
    "transport",
    "policy",
    "actions",
    "users",
    "rate_per_s",
    "warmup_s",
    "duration_s",
    "completed",
    "tps",
    "latency_ms",
    "starts",
    "errors",
    "cpu_share",
    "queue_wait_ms",
    "overhead_ms",
    "overhead_p99_by_action_ms",
    "warm_latency_ms",
    "cold_starts",
    "containers_created",
    "containers_evicted",
    "containers_peak",
    "event_counts",
    "series",
    "events",
    "events_dropped",
    "load_average",
]
"""A cell's keys in ``results.json`` before the results held a Summary."""
FLOOR_KEYS = [
    "transport",
    "broker",
    "users",
    "consumers",
    "run_ms",
    "warmup_s",
    "duration_s",
    "completed",
    "tps",
    "latency_ms",
    "starts",
    "errors",
    "cpu_share",
    "series",
]
"""A floor's keys in ``results.json`` before the results held a Summary."""
OPTIONAL = {"queue_wait_ms", "overhead_ms", "overhead_p99_by_action_ms"}
LATENCY = {"p50": 2.5, "p99": 9.0, "max": 12.0}

SUMMARY = Summary(
    completed=40,
    tps=20.0,
    latency_ms=LATENCY,
    starts={"warm": 38, "cold": 2},
    errors={"timeout": 1},
    cpu_share=0.4,
    queue_wait_ms={"p50": 0.5, "p99": 3.0},
    overhead_ms={"p50": 0.5, "p99": 7.0},
    overhead_p99_by_action_ms={"guest/a000": 7.0},
)


def cell(summary: Summary) -> CellResult:
    return CellResult(
        label="memory acs 1 action 4 users",
        transport="memory",
        policy="acs",
        actions=1,
        users=4,
        rate_per_s=None,
        warmup_s=1.0,
        duration_s=2.0,
        summary=summary,
        warm_latency_ms=LATENCY,
        cold_starts=2,
        containers_created=2,
        containers_evicted=0,
        containers_peak=2.0,
        event_counts={"container_created": 2},
        series={"t_s": [0.0], "tps": [20.0]},
        events=[],
        events_dropped=0,
        load_average=[1.0, 1.0, 1.0],
    )


def floor(summary: Summary) -> FloorResult:
    return FloorResult(
        transport="memory",
        broker="memory",
        users=4,
        consumers=4,
        run_ms=2.0,
        warmup_s=1.0,
        duration_s=2.0,
        summary=summary,
        series={"t_s": [0.0], "tps": [20.0]},
    )


def test_a_cell_lists_its_summary_inline_in_the_keys_it_always_had() -> None:
    document = cell(SUMMARY).to_json()
    assert list(document) == CELL_KEYS
    assert document["tps"] == 20.0
    assert document["overhead_p99_by_action_ms"] == {"guest/a000": 7.0}


def test_a_cell_leaves_out_what_was_not_measured() -> None:
    unmeasured = replace(
        SUMMARY, queue_wait_ms=None, overhead_ms=None, overhead_p99_by_action_ms=None
    )
    assert list(cell(unmeasured).to_json()) == [k for k in CELL_KEYS if k not in OPTIONAL]


def test_a_floor_lists_its_summary_inline_in_the_keys_it_always_had() -> None:
    """As run_raw makes it: no queue wait (the raw loop measures none), no overhead (it
    leaves the recorder's out)."""
    raw_loop = replace(
        SUMMARY, queue_wait_ms=None, overhead_ms=None, overhead_p99_by_action_ms=None
    )
    document = floor(raw_loop).to_json()
    assert list(document) == FLOOR_KEYS
    assert document["latency_ms"] == LATENCY
