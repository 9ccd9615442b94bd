"""The docker-ops report's arithmetic: percentiles, the level costs come from, the TOML."""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict
from pathlib import Path

import pytest

from broker_sched.bench.docker_ops import (
    RESULTS_FILE,
    DockerOpsResult,
    Engine,
    Level,
    PhaseResult,
    cost_level,
    format_table,
    percentile,
    save,
    simulated_costs,
    simulated_toml,
    summarize,
)
from broker_sched.config import SimulatedRuntimeSettings, load_settings
from broker_sched.errors import ConfigError


def level(concurrency: int, scale: float) -> Level:
    def phase(ops: tuple[str, str]) -> PhaseResult:
        return PhaseResult(
            cycles=10,
            duration_s=1.0,
            cycles_per_s=10.0,
            errors=0,
            first_error=None,
            latency_ms={
                op: summarize([scale * base * (1 + i / 10) for i in range(10)])
                for op, base in zip(ops, (100.0, 40.0), strict=True)
            },
        )

    return Level(concurrency, phase(("run", "rm")), phase(("pause", "unpause")))


def result(*levels: Level) -> DockerOpsResult:
    return DockerOpsResult(
        engine=Engine(server_version="20.10", storage_driver="overlay2", cpus=2),
        image="img",
        ops_per_level=10,
        phase_budget_s=10.0,
        levels=list(levels),
    )


def test_percentile_interpolates_between_ranks() -> None:
    values = [10.0, 20.0, 30.0, 40.0, 50.0]
    assert percentile(values, 0) == 10.0
    assert percentile(values, 50) == 30.0
    assert percentile(values, 90) == pytest.approx(46.0)
    assert percentile(values, 100) == 50.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_summarize_reports_percentiles_max_and_count() -> None:
    stats = summarize([3.0, 1.0, 2.0])
    assert stats == {"p10": 1.2, "p50": 2.0, "p90": 2.8, "p99": 2.98, "max": 3.0, "n": 3}
    assert summarize([])["n"] == 0


def test_cost_level_is_the_first_level_as_busy_as_the_runtime() -> None:
    assert cost_level(result(level(1, 1), level(16, 2), level(50, 5))) == 16
    assert cost_level(result(level(1, 1), level(4, 2))) == 4
    with pytest.raises(ValueError, match="no levels"):
        cost_level(result())


def test_simulated_costs_take_p10_to_p90_of_the_matching_operations() -> None:
    measured = result(level(1, 1.0), level(16, 2.0))
    costs = simulated_costs(measured)
    run = measured.levels[1].run_rm.latency_ms["run"]
    assert costs["create_ms"] == (run["p10"], run["p90"])
    unpause = measured.levels[1].pause_unpause.latency_ms["unpause"]
    assert costs["resume_ms"] == (unpause["p10"], unpause["p90"])
    assert simulated_costs(measured, 1)["remove_ms"][0] < costs["remove_ms"][0]
    with pytest.raises(ValueError, match="concurrency 3"):
        simulated_costs(measured, 3)


def test_the_toml_snippet_is_valid_simulated_settings() -> None:
    costs = simulated_costs(result(level(16, 1.0)))
    parsed = tomllib.loads(simulated_toml(costs, "p10..p90 with 16 callers"))
    settings = SimulatedRuntimeSettings(**parsed["simulated"])
    assert settings.create_ms == costs["create_ms"]
    assert settings.pause_ms == costs["pause_ms"]


def test_the_table_has_a_row_per_level_and_operation() -> None:
    table = format_table(result(level(1, 1.0), level(16, 2.0)))
    rows = [line.split() for line in table.splitlines()[3:]]
    assert [(row[0], row[1]) for row in rows] == [
        (str(c), op) for c in (1, 16) for op in ("run", "rm", "pause", "unpause")
    ]


def test_the_simulated_runtime_reads_costs_from_a_saved_run(tmp_path: Path) -> None:
    measured = result(level(1, 1.0), level(16, 2.0))
    costs = simulated_costs(measured)
    save(tmp_path, {**asdict(measured), "simulated": {"concurrency": 16, **costs}}, "")

    settings = load_settings(
        runtime="simulated", simulated={"from_docker_ops": str(tmp_path / RESULTS_FILE)}
    )

    assert settings.simulated.create_ms == costs["create_ms"]
    assert settings.simulated.resume_ms == costs["resume_ms"]
    assert settings.simulated.run_ms == SimulatedRuntimeSettings().run_ms


def test_a_range_set_beside_a_saved_run_is_an_error(tmp_path: Path) -> None:
    save(tmp_path, {"simulated": simulated_costs(result(level(16, 1.0)))}, "")
    with pytest.raises(ConfigError, match="create_ms: set here and in from_docker_ops"):
        load_settings(
            simulated={"from_docker_ops": str(tmp_path / RESULTS_FILE), "create_ms": (1, 2)}
        )


def test_a_file_that_is_not_a_saved_run_is_named(tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"levels": []}')
    with pytest.raises(ConfigError, match=r"other\.json is not a docker-ops\.json"):
        load_settings(simulated={"from_docker_ops": str(other)})
    with pytest.raises(ConfigError, match=r"missing\.json"):
        load_settings(simulated={"from_docker_ops": str(tmp_path / "missing.json")})
