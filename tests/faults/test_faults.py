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

Beside the accounting, the invocation checker judges every invocation from the client's,
the handler's and the results' histories: none lost, none answered without an
execution, and once the fault healed the action's backlog had a consumer. Duplicates,
reruns of work finished before the fault (an ack in flight or not yet committed when
the fault came) and the delay of that consumer are reported in the table the session
prints at its end, not asserted (docs/reliability.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from broker_sched.bench.chaos import (
    NETWORK_FAULTS,
    QUICK,
    BrokerNode,
    Row,
    default_toxiproxy,
    run_fault,
)
from broker_sched.bench.invocation_checker import Verdict
from broker_sched.bench.toxiproxy import Toxiproxy

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(150)]

SCRIPT = Path(__file__).parents[2] / "compose" / "native" / "brokers.sh"
PROCESS_FAULTS = ["invoker-kill", "invoker-pause", "container-crash", "controller-kill"]
PAUSES = [
    # a frozen container past the redelivery window (Kafka redelivers on a member's
    # session, which a container's pause does not end: nothing to race there); the
    # rest of the pauses on every transport are in the bench (docs/reliability.md)
    ("single", "nats", "container-pause", None),
    ("single", "redis", "controller-pause", None),
    ("single", "kafka", "controller-pause", None),
]
NETWORK = [
    # every toxic once, each role, both transports a proxy can stand in front of
    ("single", "redis", "invoker-net-timeout", None),
    ("single", "nats", "invoker-net-timeout", None),
    ("single", "redis", "controller-net-reset", None),
    ("single", "nats", "controller-net-latency", None),
    ("single", "redis", "invoker-net-slicer", None),
    ("single", "nats", "invoker-net-bandwidth", None),
]
SINGLE = [
    ("single", "memory", "container-crash", None),
    *[
        ("single", transport, fault, transport if fault == "broker-kill" else None)
        for transport in ("redis", "nats", "kafka")
        for fault in [*PROCESS_FAULTS, "broker-kill"]
    ],
    *PAUSES,
    *NETWORK,
]
CONSUMER_AFTER_HEAL_WITHIN_S = 6.0
"""What the suite asserts of liveness: a consumer within the slowest reconnect backoff
(5 s on NATS) of the heal. The target, two monitor ticks, is reported per case in the
checker's table, where it is not always met (docs/reliability.md)."""
CLUSTERS = [
    ("nats-cluster", "nats", "broker-kill", "nats-c1"),
    ("redis-sentinel", "redis", "broker-kill", "redis-s1"),
]


async def chaos(
    configs: Path,
    config: str,
    transport: str,
    fault: str,
    node: str | None,
    tmp_path: Path,
    checked: list[tuple[str, Row]],
) -> Row:
    broker = BrokerNode.from_env(node, SCRIPT) if node is not None else None
    proxy = Toxiproxy(default_toxiproxy()) if fault in NETWORK_FAULTS else None
    row = await run_fault(
        configs / f"{config}.toml", transport, fault, QUICK, broker, tmp_path, proxy
    )
    checked.append((config, row))
    return row


def assert_accounted(row: Row) -> None:
    a = row.accounting
    assert not row.notes, row.notes
    assert a.accepted > 0
    assert not a.lost, f"lost {a.lost_seqs[:20]}; refused {a.refused}; p99 {a.p99_by_second}"
    assert not a.unrecorded, f"{a.unrecorded} results without an activation record"
    assert a.completed + sum(a.failed.values()) + a.lost == a.accepted
    assert a.sent == a.accepted + sum(a.refused.values())
    c = row.checked
    assert not c.count(Verdict.LOST), f"checker: lost {c.seqs(Verdict.LOST)[:20]}"
    assert not c.results_without_execution, c.results_without_execution[:20]
    assert c.executions >= a.completed, "the handler's history is incomplete"
    gap = c.consumer_gap_s
    assert gap is None or gap <= CONSUMER_AFTER_HEAL_WITHIN_S, f"no consumer {gap} s after heal"


@pytest.mark.parametrize(("config", "transport", "fault", "node"), SINGLE)
async def test_single_node(
    fault_configs: Path,
    config: str,
    transport: str,
    fault: str,
    node: str | None,
    tmp_path: Path,
    checker_rows: list[tuple[str, Row]],
) -> None:
    row = await chaos(fault_configs, config, transport, fault, node, tmp_path, checker_rows)
    assert_accounted(row)
    if fault == "broker-kill":
        assert row.accounting.refused, "the outage refused nothing: was the broker killed?"
        assert row.accounting.refused_within_s is not None
        assert row.accounting.refused_within_s <= 1.0
    elif not fault.startswith("controller-"):
        # a dead controller, or one cut from its broker, refuses calls until it is back;
        # an invoker's fault must cost the callers nothing but time
        assert not row.accounting.refused, row.accounting.refused


@pytest.mark.parametrize(("config", "transport", "fault", "node"), CLUSTERS)
async def test_cluster_node(
    fault_configs: Path,
    config: str,
    transport: str,
    fault: str,
    node: str | None,
    tmp_path: Path,
    checker_rows: list[tuple[str, Row]],
) -> None:
    row = await chaos(fault_configs, config, transport, fault, node, tmp_path, checker_rows)
    assert_accounted(row)
