"""The simulator makes the decisions the real-time stack makes, on small workloads.

Same workload, same settings: the real stack (memory transport, simulated containers,
real clock) and the simulator (virtual clock, no broker) must create about as many
containers and complete about as many activations. The tolerance covers what the
simulator leaves out on purpose — fetch and ack latency, heartbeat lag, event-loop
jitter: containers created within max(2, 30 %), completions within 10 %.
"""

from __future__ import annotations

import pytest

from broker_sched.bench.cell import run_cell
from broker_sched.bench.progress import Progress
from broker_sched.bench.workload import ActionClass, Phase, RunTime, Workload
from broker_sched.config import load_settings
from broker_sched.simulator.run import simulate

pytestmark = pytest.mark.timeout(90)

COMMON = {
    "name": "sim-vs-stack",
    "invokers": 2,
    "slots": 10,
    "warmup_s": 0.0,
    "duration_s": 6.0,
    "settings": {"simulated": {"create_ms": (300.0, 300.0)}},
}
WORKLOADS = {
    "steady": Workload(
        **COMMON,
        classes=[ActionClass(name="steady", count=2, run_ms=RunTime(ms=50))],
        rate_per_s=[60.0],
    ),
    "bursts": Workload(
        **COMMON,
        classes=[
            ActionClass(name="fast", count=2, run_ms=RunTime(ms=5)),
            ActionClass(name="slow", count=1, run_ms=RunTime(ms=200)),
        ],
        phases=[Phase(shape="onoff", duration_s=6.0, rate_per_s=80.0, on_s=1.0, off_s=1.0)],
    ),
}


@pytest.mark.parametrize("name", sorted(WORKLOADS))
async def test_simulator_and_stack_agree(name: str) -> None:
    workload = WORKLOADS[name]
    settings = load_settings()
    simulated = simulate(workload, settings, ["acs"]).policy("acs")
    real = await run_cell(settings, workload, workload.cells()[0], progress=Progress(None))
    created = real.containers_created
    assert abs(simulated.containers_created - created) <= max(2, 0.3 * created), (
        simulated,
        real.event_counts,
    )
    assert simulated.completed == pytest.approx(real.summary.completed, rel=0.1)
