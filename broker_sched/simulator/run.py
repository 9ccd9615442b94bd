"""Run a scenario under each policy: the entry points for the CLI and for tests.

Every policy gets a fresh engine over the same scenario and seeds, so the arrivals (and,
order permitting, the costs) are the same for all and the reports compare policies
only. :func:`simulate` takes a workload file's :class:`Workload` and the settings the
real-time stack would run with; :func:`simulate_scenario` any prepared scenario.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from broker_sched.bench.workload import Workload
from broker_sched.config import Settings
from broker_sched.simulator.acs import AcsPolicy
from broker_sched.simulator.engine import Engine, Policy
from broker_sched.simulator.keepalive import DEFAULT_KEEP_ALIVE_S, KeepAlivePolicy
from broker_sched.simulator.metrics import PolicyReport
from broker_sched.simulator.model import ClosedLoop, Scenario
from broker_sched.simulator.sharding import ShardingPolicy
from broker_sched.simulator.workload import Spread, from_workload, workload_settings

PolicyName = Literal["acs", "sharding", "keepalive"]
POLICIES: tuple[PolicyName, ...] = ("acs", "sharding", "keepalive")


@dataclass(frozen=True, slots=True)
class SimulationReport:
    scenario: str
    actions: int
    invokers: int
    slots: int
    duration_s: float
    load: str
    """"open loop" or "N closed-loop users"."""
    keep_alive_s: float
    """The keep-alive of the fixed keep-alive baseline."""
    policies: tuple[PolicyReport, ...]

    def policy(self, name: str) -> PolicyReport:
        return next(report for report in self.policies if report.policy == name)


def make_policy(name: PolicyName, settings: Settings, keepalive_s: float) -> Policy:
    if name == "acs":
        return AcsPolicy(settings)
    if name == "sharding":
        return ShardingPolicy(settings.invoker.keep_alive_s)
    return KeepAlivePolicy(keepalive_s)


def simulate_scenario(
    scenario: Scenario,
    settings: Settings,
    policies: Sequence[PolicyName] = POLICIES,
    *,
    keepalive_s: float = DEFAULT_KEEP_ALIVE_S,
    record_decisions: bool = False,
) -> SimulationReport:
    reports = tuple(
        Engine(
            scenario,
            settings,
            make_policy(name, settings, keepalive_s),
            record_decisions=record_decisions,
        ).run()
        for name in policies
    )
    load = scenario.load
    return SimulationReport(
        scenario=scenario.name,
        actions=len(scenario.actions),
        invokers=scenario.cluster.invokers,
        slots=scenario.cluster.slots,
        duration_s=load.duration_s,
        load=f"{load.users} closed-loop users" if isinstance(load, ClosedLoop) else "open loop",
        keep_alive_s=keepalive_s,
        policies=reports,
    )


def simulate(
    workload: Workload,
    settings: Settings,
    policies: Sequence[PolicyName] = POLICIES,
    *,
    keepalive_s: float = DEFAULT_KEEP_ALIVE_S,
    spread: Spread = "even",
    record_decisions: bool = False,
) -> SimulationReport:
    """Simulate ``workload``'s first cell under each of ``policies``.

    ``settings`` are the operator's, as for a bench run; the workload's own overrides
    are applied on top (:func:`~broker_sched.simulator.workload.workload_settings`).
    ``record_decisions`` keeps every ``acs`` tick's decisions in the report (for a
    comparison with the real-time stack; leave it off for long runs).
    """
    settings = workload_settings(workload, settings)
    scenario = from_workload(workload, settings, spread=spread)
    return simulate_scenario(
        scenario, settings, policies, keepalive_s=keepalive_s, record_decisions=record_decisions
    )
