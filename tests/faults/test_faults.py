"""Every fault under steady load, on every transport: no accepted activation is lost.

Each case is one bounded `broker-sched bench chaos` run (a controller and two invoker
processes, 30 invocations a second, the fault six seconds in). What each must show:
every accepted activation ends with a result (reruns are only dropped duplicates) and a
record of it — the invoker keeps the record before it acks the activation, so neither a
dead controller nor a broker killed with results in transit costs one — and while a
single-node broker is down invocations fail within 1 s with a clear error. (On Kafka a
publish whose partition leader cannot be reached is refused before the producer buffers
it; one buffered in the instant of the kill still waits for its 10 s deadline, since it
may yet be written, so refusals are timed from 0.5 s after the fault:
docs/reliability.md.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from broker_sched.bench.chaos import QUICK, BrokerNode, Row, run_fault

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(150)]

SCRIPT = Path(__file__).parents[2] / "compose" / "native" / "brokers.sh"
PROCESS_FAULTS = ["invoker-kill", "invoker-pause", "container-crash", "controller-kill"]
SINGLE = [
    ("single", "memory", "container-crash", None),
    *[
        ("single", transport, fault, transport if fault == "broker-kill" else None)
        for transport in ("redis", "nats", "kafka")
        for fault in [*PROCESS_FAULTS, "broker-kill"]
    ],
]
CLUSTERS = [
    ("nats-cluster", "nats", "broker-kill", "nats-c1"),
    ("redis-sentinel", "redis", "broker-kill", "redis-s1"),
]


async def chaos(
    configs: Path, config: str, transport: str, fault: str, node: str | None, tmp_path: Path
) -> Row:
    broker = BrokerNode.from_env(node, SCRIPT) if node is not None else None
    return await run_fault(configs / f"{config}.toml", transport, fault, QUICK, broker, tmp_path)


def assert_accounted(row: Row) -> None:
    a = row.accounting
    assert not row.notes, row.notes
    assert a.accepted > 0
    assert not a.lost, f"lost {a.lost_seqs[:20]}; refused {a.refused}; p99 {a.p99_by_second}"
    assert not a.unrecorded, f"{a.unrecorded} results without an activation record"
    assert a.completed + sum(a.failed.values()) + a.lost == a.accepted
    assert a.sent == a.accepted + sum(a.refused.values())


@pytest.mark.parametrize(("config", "transport", "fault", "node"), SINGLE)
async def test_single_node(
    fault_configs: Path,
    config: str,
    transport: str,
    fault: str,
    node: str | None,
    tmp_path: Path,
) -> None:
    row = await chaos(fault_configs, config, transport, fault, node, tmp_path)
    assert_accounted(row)
    if fault == "broker-kill":
        assert row.accounting.refused, "the outage refused nothing: was the broker killed?"
        assert row.accounting.refused_within_s is not None
        assert row.accounting.refused_within_s <= 1.0
    elif fault != "controller-kill":  # a dead controller refuses calls until it is back
        assert not row.accounting.refused, row.accounting.refused


@pytest.mark.parametrize(("config", "transport", "fault", "node"), CLUSTERS)
async def test_cluster_node(
    fault_configs: Path,
    config: str,
    transport: str,
    fault: str,
    node: str | None,
    tmp_path: Path,
) -> None:
    row = await chaos(fault_configs, config, transport, fault, node, tmp_path)
    assert_accounted(row)
