"""Every scenario, `--quick`, on the memory transport, through the CLI: a smoke test that
the harness runs end to end and writes what it promises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from broker_sched.cli import main

pytestmark = pytest.mark.timeout(120)

OVERHEAD_KEYS = {"warm_p50_ratio", "tps_ratio", "containers", "raw", "scheduler"}


def bench(capsys: pytest.CaptureFixture[str], out: Path, *args: str) -> dict[str, Any]:
    code = main(["bench", *args, "--transport", "memory", "--quick", "--json", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err == "", "--json must suppress the progress line"
    results: dict[str, Any] = json.loads(captured.out)
    assert (out / "results.json").is_file()
    assert (out / "report.md").read_text().startswith("# ")
    for figure in results["figures"]:
        assert (out / figure).stat().st_size > 0
    assert set(results["overhead"]["memory"]) >= OVERHEAD_KEYS
    return results


def test_seed_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    results = bench(capsys, tmp_path, "seed-table")
    policies = results["transports"]["memory"]["policies"]
    assert set(policies) == {"sharding", "acs"}
    for summary in policies.values():
        assert "tps_ratio_100_to_1" in summary
        assert summary["tps_ratio_100_to_1"] is not None
        for cell in summary["cells"]:
            assert cell["tps"] > 0
            assert set(cell["latency_ms"]) >= {"p50", "p75", "p95", "p99", "p99.9", "max"}
            assert "cold_starts" in cell
            assert {"t_s", "tps", "p50_ms", "p99_ms", "containers"} <= set(cell["series"])
    names = {t["name"] for t in results["targets"]}
    assert "memory: acs TPS(100 actions) ÷ TPS(1 action)" in names


def test_mixed(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    results = bench(capsys, tmp_path, "mixed")
    loads = {(c["load"], c["policy"]) for c in results["cells"]}
    assert loads == {
        (load, policy) for load in ("below", "above") for policy in ("acs", "sharding")
    }
    for cell in results["cells"]:
        assert cell["tps"] > 0
        assert set(cell["overhead_ms"]) >= {"p50", "p99"}
        assert {name.split("/")[1][:-3] for name in cell["overhead_p99_by_action_ms"]} == {
            "short",
            "long",
        }
    assert results["slot_capacity_per_s"] > 0
    names = {t["name"] for t in results["targets"]}
    assert "memory above: acs TPS ÷ ideal" in names


def test_full_cluster(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    results = bench(capsys, tmp_path, "full-cluster")
    outcome = results["transports"]["memory"]
    assert sum(outcome["outcomes"].values()) > 100
    assert outcome["outcomes"].get("success", 0) >= 100


def test_raw(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    results = bench(capsys, tmp_path, "raw")
    floor = results["transports"]["memory"]
    assert floor["tps"] > 0
    assert floor["latency_ms"]["p50"] > 0
    overhead = results["overhead"]["memory"]
    assert overhead["warm_p50_ratio"] > 0
    assert overhead["tps_ratio"] > 0


def test_rebalance(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    results = bench(capsys, tmp_path, "rebalance")
    run = results["transports"]["memory"]["dynamic"]
    assert [op["operation"] for op in run["operations"]] == ["add", "remove"]
    for op in run["operations"]:
        assert op["pause_ms"] < 1_000, "the memory transport has no rebalance to pause for"
        assert op["rebalances"] == 0
    assert run["steady"]["tps"] > 0


def test_partition_limit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    results = bench(capsys, tmp_path, "partition-limit")
    result = results["transports"]["memory"]
    tps = [step["tps"] for step in result["steps"]]
    assert tps == sorted(tps), "without partitions every consumer adds throughput"
    assert result["resize"]["rebalances"] == 0


def test_many_topics(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    results = bench(capsys, tmp_path, "many-topics")
    sizes = results["transports"]["memory"]["sizes"]
    assert [row["queues"] for row in sizes] == [10, 50]
    for row in sizes:
        assert row["pending_seen"] == row["pending_expected"]
        assert row["backlog_ms_per_action"] >= 0


def test_a_workload_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    workload = tmp_path / "tiny.toml"
    workload.write_text(
        'policy = "acs"\ninvokers = 2\nslots = 4\nrate_per_s = 50\nduration_s = 1\n'
        "warmup_s = 0.5\ninterval_s = 0.25\n[actions]\ncount = 2\n"
        "[settings.simulated]\ncreate_ms = [20, 40]\n"
    )
    results = bench(capsys, tmp_path / "out", str(workload))
    [cell] = results["cells"]
    assert cell["rate_per_s"] == 50
    assert cell["completed"] > 0


def test_an_unknown_scenario_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["bench", "seedtable", "--quick", "--out", str(tmp_path)]) == 2
    assert "unknown scenario 'seedtable'" in capsys.readouterr().err


def test_overhead(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(
        ["bench", "overhead", "--transport", "memory", "--quick", "--json", "--out", str(tmp_path)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    results = json.loads(captured.out.strip().splitlines()[-1])
    rows = results["rows"]
    assert [row["callers"] for row in rows] == [1, 50]
    for row in rows:
        for side in ("bare", "scheduled"):
            assert row[side]["tps"] > 0
            assert row[side]["errors"] == 0
            assert row[side]["p50_ms"] <= row[side]["p99_ms"]
            assert row[side]["cpu_s_per_1k"] > 0
        assert row["tps_ratio"] > 0
    footprint = results["footprint"]
    assert footprint["warm_proxies"] == footprint["actions"]
    assert footprint["bytes_per_warm_proxy"] > 0
    assert footprint["bytes_per_idle_queue"] > 0
    assert "memory: scheduled activations/s" in {t["name"] for t in results["targets"]}


def bench_alone(capsys: pytest.CaptureFixture[str], out: Path, *args: str) -> dict[str, Any]:
    """A scenario with no overhead block (it measures starts, not the transport)."""
    code = main(["bench", *args, "--transport", "memory", "--quick", "--json", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    results: dict[str, Any] = json.loads(captured.out)
    assert "overhead" not in results
    assert (out / "report.md").read_text().startswith("# ")
    return results


def test_cold_chain(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    results = bench_alone(capsys, tmp_path, "cold-chain")
    without, with_ = results["modes"]["without"], results["modes"]["with"]
    assert [run["starts"] for run in without["runs"]] == [["cold", "cold", "cold"]] * 2
    assert all(run["starts"][0] == "cold" for run in with_["runs"])
    assert with_["mean_cold_starts"] < without["mean_cold_starts"]
    assert results["later_cold_starts_s"] > 0
    assert "saving ÷ the later steps' cold starts" in {t["name"] for t in results["targets"]}


def test_bursty(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    results = bench_alone(capsys, tmp_path, "bursty")
    variants = results["variants"]
    assert list(variants) == ["keep-alive only", "last-container retention", "scale-down delay"]
    for variant in variants.values():
        assert sum(variant["starts"].values()) == 18
        assert variant["container_s"] > 0


def test_warm_tiers(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    results = bench_alone(capsys, tmp_path, "warm-tiers")
    tiers = results["tiers"]
    assert list(tiers) == ["cold", "prewarm", "resumed", "warm"]
    assert tiers["warm"]["container_p50_ms"] == 0
    assert tiers["cold"]["container_p50_ms"] > tiers["prewarm"]["container_p50_ms"]


def test_leases(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["bench", "leases", "--transport", "memory", "--quick", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    [long_run] = json.loads(captured.out)["long_runs"]
    assert long_run["run_s"] > long_run["window_s"], "the run outlasts the redelivery window"
    assert long_run["answered"]
    assert long_run["executions"] == 1
