"""Traces in the Azure Functions 2019 layout: the reader, the sample and their spread."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from broker_sched.config import Settings
from broker_sched.errors import ConfigError
from broker_sched.simulator import report
from broker_sched.simulator.command import SimulateArgs, parse_policies, run_simulation
from broker_sched.simulator.model import Cluster
from broker_sched.simulator.run import simulate_scenario
from broker_sched.simulator.sample import (
    DURATIONS_FILE,
    INVOCATIONS_FILE,
    generate_trace,
    write_trace,
)
from broker_sched.simulator.trace import (
    DURATION_COLUMNS,
    PercentileRunTime,
    TraceArrivals,
    durations_path_for,
    from_trace,
    read_trace,
)


def test_the_sample_reads_back_as_written(tmp_path: Path) -> None:
    trace = generate_trace(functions=30, minutes=10, seed=4)
    invocations, durations = write_trace(trace, tmp_path)
    assert durations_path_for(invocations) == durations
    read = read_trace(invocations)
    assert read.minutes == 10
    assert read.unmatched == 0
    assert [f.per_minute for f in read.functions] == [f.per_minute for f in trace.functions]
    assert [f.run_ms.points for f in read.functions] == [f.run_ms.points for f in trace.functions]
    assert read.functions[0].trigger == trace.functions[0].trigger


def test_the_sample_has_the_columns_of_the_azure_trace(tmp_path: Path) -> None:
    invocations, durations = write_trace(generate_trace(functions=5, minutes=3), tmp_path)
    assert invocations.name == INVOCATIONS_FILE
    assert invocations.read_text().splitlines()[0] == (
        "HashOwner,HashApp,HashFunction,Trigger,1,2,3"
    )
    assert durations.read_text().splitlines()[0] == (
        "HashOwner,HashApp,HashFunction,Average,Count,Minimum,Maximum,percentile_Average_0,"
        "percentile_Average_1,percentile_Average_25,percentile_Average_50,"
        "percentile_Average_75,percentile_Average_99,percentile_Average_100"
    )
    assert durations.name == DURATIONS_FILE


def test_the_sample_is_skewed_few_hot_many_rare() -> None:
    trace = generate_trace()
    counts = sorted((f.invocations for f in trace.functions), reverse=True)
    assert len(counts) == 200
    assert sum(counts[:10]) > 0.8 * sum(counts)
    assert sum(1 for c in counts if c <= trace.minutes) > 100
    timers = [f for f in trace.functions if f.trigger == "timer"]
    assert len(timers) == 60


def test_same_seed_same_files(tmp_path: Path) -> None:
    first = write_trace(generate_trace(functions=20, minutes=5, seed=9), tmp_path / "a")
    second = write_trace(generate_trace(functions=20, minutes=5, seed=9), tmp_path / "b")
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]


def test_a_function_without_durations_is_counted_not_simulated(tmp_path: Path) -> None:
    invocations, durations = write_trace(generate_trace(functions=4, minutes=2), tmp_path)
    lines = durations.read_text().splitlines()
    durations.write_text("\n".join(lines[:-1]) + "\n")
    read = read_trace(invocations)
    assert len(read.functions) == 3
    assert read.unmatched == (1 if generate_trace(4, 2).functions[-1].invocations else 0)


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    invocations = tmp_path / "invocations_per_function_md.anon.d01.csv"
    invocations.write_text("HashOwner,HashApp,HashFunction,1\na,b,c,1\n")
    durations = tmp_path / "durations.csv"
    durations.write_text(",".join(DURATION_COLUMNS) + "\n")
    with pytest.raises(ConfigError, match="Trigger"):
        read_trace(invocations, durations)
    durations.write_text("HashOwner,HashApp,HashFunction,Average\n")
    with pytest.raises(ConfigError, match="percentile_Average_99"):
        read_trace(invocations, durations)


def test_run_times_are_drawn_between_the_percentiles() -> None:
    run_ms = PercentileRunTime(((0.0, 1.0), (0.5, 10.0), (1.0, 100.0)))
    rng = random.Random(1)
    draws = sorted(run_ms.draw(rng) for _ in range(10_000))
    assert draws[0] >= 1.0
    assert draws[-1] <= 100.0
    assert draws[5_000] == pytest.approx(10.0, rel=0.05)


def test_each_minute_is_spread_over_its_minute() -> None:
    arrivals = TraceArrivals(((3, 0, 5), (1, 1, 0)), minutes=3)
    windows = list(arrivals.windows(random.Random(2)))
    assert [len(w) for w in windows] == [4, 1, 5]
    assert all(60 * m <= t < 60 * (m + 1) for m, w in enumerate(windows) for t, _ in w)
    assert [i for _, i in windows[1]] == [1]
    poisson = TraceArrivals(((600,) * 10,), minutes=10, spread="poisson")
    total = sum(len(w) for w in poisson.windows(random.Random(3)))
    assert total == pytest.approx(6000, rel=0.05)


def test_a_short_sample_runs_under_every_policy_and_reports(tmp_path: Path) -> None:
    trace = generate_trace(functions=40, minutes=2, seed=5)
    tiny = from_trace(trace, cluster=Cluster(2, 10, 4096), timeout_s=60.0, seed=1)
    result = simulate_scenario(tiny, Settings())
    assert [p.policy for p in result.policies] == ["acs", "sharding", "keepalive"]
    assert all(p.activations == trace.invocations for p in result.policies)
    paths = report.write(result, tmp_path)
    assert sorted(p.name for p in paths) == [
        "cold_starts.png",
        "containers.png",
        "report.json",
        "report.md",
        "wait_cdf.png",
    ]
    assert "| acs |" in (tmp_path / "report.md").read_text()


def test_the_command_reads_a_trace_file(tmp_path: Path) -> None:
    invocations, _ = write_trace(generate_trace(functions=10, minutes=2, seed=6), tmp_path)
    args = SimulateArgs(trace=invocations, policies="sharding", invokers=2, minutes=1)
    result = run_simulation(Settings(), args)
    assert result.duration_s == 60.0
    assert [p.policy for p in result.policies] == ["sharding"]


def test_unknown_policies_are_refused() -> None:
    with pytest.raises(ConfigError, match="lru"):
        parse_policies("acs,lru")
