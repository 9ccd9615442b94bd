"""The built-in tail workloads: registered, and of the shapes they promise."""

from __future__ import annotations

from broker_sched.bench import scenarios
from broker_sched.bench.tails import ONOFF_LOW_PER_S, WORKLOADS, bimodal, onoff_zipf_heavy


def test_each_is_a_bench_scenario() -> None:
    for name in WORKLOADS:
        assert scenarios.names(name) == [name]
        assert name in scenarios.names(scenarios.ALL)


def test_onoff_is_zipf_popular_heavy_tailed_and_changes_its_rate_tenfold() -> None:
    workload = onoff_zipf_heavy()
    shares = [spec.share for spec in workload.classes]
    assert shares == sorted(shares, reverse=True)
    assert shares[0] / shares[9] == 10.0
    rates = {phase.rate_per_s for phase in workload.phases}
    assert rates == {ONOFF_LOW_PER_S, 10 * ONOFF_LOW_PER_S}
    assert all(spec.run_ms.kind == "lognormal" for spec in workload.classes)


def test_bimodal_splits_the_calls_between_milliseconds_and_hundreds() -> None:
    workload = bimodal()
    assert workload.users == [100]
    assert sorted(spec.run_ms.ms for spec in workload.classes) == [2.0, 300.0]
