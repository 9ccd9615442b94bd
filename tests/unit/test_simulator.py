"""The simulator's engine and policies on tiny scenarios with exact outcomes."""

from __future__ import annotations

import dataclasses
import random

import pytest

from broker_sched.bench.workload import parse_workload
from broker_sched.config import Settings
from broker_sched.scheduler.sharding import choose_invoker
from broker_sched.simulator.engine import Engine
from broker_sched.simulator.keepalive import KeepAlivePolicy
from broker_sched.simulator.metrics import PolicyReport
from broker_sched.simulator.model import ClosedLoop, Cluster, Scenario, SimAction
from broker_sched.simulator.run import PolicyName, make_policy, simulate, simulate_scenario
from broker_sched.simulator.sharding import ShardingPolicy
from broker_sched.simulator.workload import FixedRunTime, ListedArrivals, RateArrivals

CREATE_S = 0.5
RESUME_S = 0.1
REMOVE_S = 0.05
RUN_S = 0.01


def settings(**invoker: float) -> Settings:
    return Settings.model_validate(
        {
            "invoker": {"keep_alive_s": 10.0, "pause_grace_s": 1.0, **invoker},
            "simulated": {
                "create_ms": (CREATE_S * 1000,) * 2,
                "init_ms": (0.0, 0.0),
                "resume_ms": (RESUME_S * 1000,) * 2,
                "remove_ms": (REMOVE_S * 1000,) * 2,
            },
        }
    )


def scenario(
    arrivals: list[tuple[float, int]],
    *,
    actions: int = 1,
    run_s: float = RUN_S,
    invokers: int = 1,
    slots: int = 20,
    duration_s: float = 30.0,
) -> Scenario:
    return Scenario(
        name="tiny",
        actions=tuple(SimAction(f"guest/a{i}", FixedRunTime(run_s * 1000)) for i in range(actions)),
        cluster=Cluster(invokers, slots, 8192),
        load=ListedArrivals(tuple(arrivals), duration_s),
        timeout_s=60.0,
        seed=7,
    )


def run(
    policy: PolicyName, tiny: Scenario, config: Settings, keepalive_s: float = 600.0
) -> PolicyReport:
    return Engine(tiny, config, make_policy(policy, config, keepalive_s)).run()


@pytest.mark.parametrize("policy", ["acs", "sharding", "keepalive"])
def test_one_invocation_is_one_cold_start_that_waits_the_create(policy: PolicyName) -> None:
    report = run(policy, scenario([(0.0, 0)]), settings())
    assert (report.activations, report.completed, report.cold_starts) == (1, 1, 1)
    assert report.containers_created == 1
    assert report.wait_p50_ms == pytest.approx(CREATE_S * 1000)
    assert report.cold_start_share == 1.0


def test_acs_reuses_warm_then_resumes_paused_then_cold_starts_after_keep_alive() -> None:
    # 0: cold. 1: warm (idle 0.49 s < grace 1 s). 5: paused → resumed. The container
    # leaves 10 s after its last run (ends 5.11) and is gone 50 ms later; 20: cold again.
    report = run("acs", scenario([(0.0, 0), (1.0, 0), (5.0, 0), (20.0, 0)]), settings())
    assert (report.cold_starts, report.resumed, report.completed) == (2, 1, 4)
    assert report.containers_created == 2
    assert report.wait_max_ms == pytest.approx(CREATE_S * 1000)
    # Waits 0.5 s, 0, 0.1 s (the resume), 0.5 s: the median (nearest rank) is the resume.
    assert report.wait_p50_ms == pytest.approx(RESUME_S * 1000)


def test_keep_alive_expiry_frees_the_container_and_counts_its_idle_memory() -> None:
    # Each call: created at t, ready t+0.5, runs 10 ms, idle 2 s, removed in 50 ms.
    report = run("keepalive", scenario([(0.0, 0), (10.0, 0)]), settings(), keepalive_s=2.0)
    assert (report.cold_starts, report.containers_created, report.peak_containers) == (2, 2, 1)
    idle_s = 2.0 + REMOVE_S
    assert report.wasted_gb_s == pytest.approx(2 * idle_s * 256 / 1024)
    lifetime_s = CREATE_S + RUN_S + idle_s
    assert report.container_gb_s == pytest.approx(2 * lifetime_s * 256 / 1024)


def test_keep_alive_baseline_makes_one_container_per_concurrent_request() -> None:
    report = run("keepalive", scenario([(0.0, 0)] * 3), settings())
    assert (report.cold_starts, report.containers_created) == (3, 3)


def test_sharding_evicts_the_least_recently_used_idle_container() -> None:
    # Two slots, three actions: c evicts a (used longest ago), then a evicts b.
    tiny = scenario([(0.0, 0), (1.0, 1), (2.0, 2), (3.0, 0)], actions=3, slots=2)
    report = run("sharding", tiny, settings())
    assert (report.evictions, report.cold_starts, report.completed) == (2, 4, 4)
    assert report.peak_containers == 2


def test_sharding_waits_when_every_container_is_busy() -> None:
    # One slot, a 5 s run of a; b must wait until it ends, then evicts it.
    tiny = scenario([(0.0, 0), (1.0, 1)], actions=2, slots=1, run_s=5.0)
    report = run("sharding", tiny, settings())
    assert report.evictions == 1
    assert report.wait_max_ms == pytest.approx((CREATE_S + 5.0 - 1.0 + CREATE_S) * 1000)


def test_acs_evicts_idle_containers_of_others_when_the_cluster_is_full() -> None:
    # Two slots held by a and b (idle after their runs); c's first call evicts one.
    tiny = scenario([(0.0, 0), (0.0, 1), (5.0, 2)], actions=3, slots=2)
    report = run("acs", tiny, settings())
    assert report.evictions >= 1
    assert report.completed == 3
    assert report.rejected == 0


def test_acs_rejects_at_once_when_no_room_can_be_made() -> None:
    # a and b run 20 s on the only two slots: nothing is idle to evict, so once a tick
    # has seen that, c's calls are rejected instead of waiting for their timeout.
    calls = [(0.0, 0), (0.0, 1)] + [(1.0 + 0.5 * i, 2) for i in range(6)]
    report = run("acs", scenario(calls, actions=3, slots=2, run_s=20.0), settings())
    assert report.rejected >= 5
    assert report.evictions == 0


def test_acs_creates_from_the_backlog_beyond_the_poke() -> None:
    tiny = scenario([(i * 0.001, 0) for i in range(200)], run_s=0.2)
    report = run("acs", tiny, settings())
    assert report.completed == 200
    assert report.decide_calls > 0
    assert report.containers_created > 1


def test_a_closed_loop_user_calls_back_to_back() -> None:
    tiny = dataclasses.replace(
        scenario([]), load=ClosedLoop(users=1, duration_s=2.0, weights=(1.0,))
    )
    report = run("keepalive", tiny, settings())
    # One cold start (0.5 s) then warm 10 ms runs until 2 s.
    assert report.cold_starts == 1
    assert report.completed == pytest.approx(1 + (2.0 - CREATE_S - RUN_S) / RUN_S, abs=2)


def test_even_arrivals_follow_the_rate() -> None:
    arrivals = RateArrivals(lambda _t: 10.0, duration_s=2.0, weights=(1.0,))
    times = [t for window in arrivals.windows(random.Random(1)) for t, _ in window]
    assert times == pytest.approx([0.1 * (i + 1) for i in range(20)][: len(times)])
    assert len(times) in (19, 20)


def test_poisson_arrivals_have_the_mean_rate() -> None:
    arrivals = RateArrivals(lambda _t: 50.0, 100.0, (1.0, 1.0), spread="poisson")
    picks = [i for window in arrivals.windows(random.Random(3)) for _, i in window]
    assert len(picks) == pytest.approx(5000, rel=0.05)
    assert picks.count(0) == pytest.approx(len(picks) / 2, rel=0.1)


def test_cached_probes_choose_as_choose_invoker_does() -> None:
    tiny = scenario([], invokers=7)
    policy = ShardingPolicy(10.0)
    engine = Engine(tiny, settings(), policy)
    policy.start(engine)
    rng = random.Random(5)
    for invoker in engine.invokers:
        invoker.held = rng.choice([0, invoker.slots])
    policy.rng, reference = random.Random(9), random.Random(9)
    for name in [f"guest/x{i}" for i in range(40)]:
        free = [invoker.slots - invoker.held for invoker in engine.invokers]
        expected = choose_invoker(name, free, [True] * len(free), reference)
        assert policy.choose(name) == expected


def test_same_seed_same_report() -> None:
    calls = [(random.Random(2).random() * 20, i % 5) for i in range(300)]
    tiny = scenario(calls, actions=5, slots=3, invokers=2)
    first = simulate_scenario(tiny, settings())
    second = simulate_scenario(tiny, settings())
    assert [dataclasses.replace(p, wall_s=0) for p in first.policies] == [
        dataclasses.replace(p, wall_s=0) for p in second.policies
    ]


def test_keepalive_waits_for_room_instead_of_evicting() -> None:
    tiny = scenario([(0.0, 0), (1.0, 1)], actions=2, slots=1)
    report = Engine(tiny, settings(), KeepAlivePolicy(3.0)).run()
    # b waits until a's container leaves (idle 3 s after 0.51, gone 50 ms later).
    assert report.evictions == 0
    assert report.wait_max_ms == pytest.approx((0.51 + 3.0 + REMOVE_S - 1.0 + CREATE_S) * 1000)


def test_a_workload_file_runs_its_classes_and_phases() -> None:
    workload = parse_workload(
        {
            "invokers": 2,
            "slots": 5,
            "classes": [
                {"name": "short", "count": 3, "share": 0.5, "run_ms": 5},
                {
                    "name": "long",
                    "count": 2,
                    "share": 0.5,
                    "run_ms": {"kind": "lognormal", "median_ms": 200, "sigma": 0.3},
                },
            ],
            "phases": [
                {"duration_s": 2, "rate_per_s": 20},
                {"shape": "ramp", "duration_s": 2, "rate_per_s": 20, "to_rate_per_s": 60},
            ],
            "settings": {"simulated": {"create_ms": [300, 300]}},
        }
    )
    result = simulate(workload, Settings(), ["acs", "sharding"], record_decisions=True)
    assert result.actions == 5
    assert (result.invokers, result.slots) == (2, 5)
    # 2 s at 20/s, then a ramp averaging 40/s for 2 s: 120 arrivals (the last may fall
    # just past the end).
    assert [p.activations for p in result.policies] == [pytest.approx(120, abs=1)] * 2
    assert all(p.completed + p.timed_out + p.rejected == p.activations for p in result.policies)
    acs = result.policy("acs")
    assert acs.wait_max_ms >= 300
    assert acs.decisions[0].rule == "poke"
    assert acs.decisions[0].create == 1
    assert sum(d.create for d in acs.decisions) == acs.containers_created
    assert result.policy("sharding").decisions == ()


def test_acs_scales_an_over_provisioned_action_in_under_a_trickle() -> None:
    # A burst makes many containers; a trickle every 0.5 s keeps them all warm (none
    # idles for its keep-alive), so only the central scale-in can shrink the group.
    burst = [(i * 0.001, 0) for i in range(300)]
    trickle = [(1.0 + 0.5 * i, 0) for i in range(80)]
    report = run("acs", scenario(burst + trickle, run_s=0.2, duration_s=42.0), settings())
    assert report.scaled_in > 0
    assert report.containers[-1][1] < report.peak_containers
