"""Reports: JSON and Markdown shapes, targets that say by how much, PNGs that exist."""

from __future__ import annotations

import json
from pathlib import Path

from broker_sched.bench.plots import BarFigure, Line, Marker, Panel, TimeFigure
from broker_sched.bench.report import Report, Table, at_least, at_most, cell, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def sample_report() -> Report:
    report = Report(
        scenario="sample",
        title="sample: a report",
        quick=True,
        summary="What ran.",
        data={"transports": {"memory": {"tps": 1234.5}}},
    )
    report.tables.append(Table("Cells", ["cell", "TPS", "p99 ms"], [["a", 1234.5, None]]))
    report.targets += [
        at_least("memory: ratio", 0.6, 0.8, "because of reasons"),
        at_most("memory: cost", 0.5, 1.0, "unused"),
        at_least("kafka: ratio", None, 0.8, "kafka was not run"),
    ]
    t_s = [0.0, 0.5, 1.0, 1.5]
    report.figures += [
        TimeFigure(
            "sample-latency",
            "latency",
            [
                Panel(
                    "p99",
                    "ms",
                    [Line("p99", t_s, [1.0, None, 30.0, 2.0])],
                    [Marker(0.7, "rebalance_started")],
                    log_y=True,
                    shade_until_s=0.5,
                ),
                Panel("tps", "TPS", [Line("tps", t_s, [0.0, 10.0, 12.0, 11.0])]),
            ],
            columns=2,
        ),
        BarFigure(
            "sample-tps",
            "TPS",
            ["1 action", "100 actions"],
            {"acs": [100.0, 90.0], "sharding": [100.0, None]},
            "TPS",
            log_y=True,
            reference=50.0,
            reference_label="goal",
        ),
    ]
    return report


def test_write_report_writes_json_markdown_and_pngs(tmp_path: Path) -> None:
    written = write_report(sample_report(), tmp_path / "out")
    names = sorted(path.name for path in written)
    assert names == ["report.md", "results.json", "sample-latency.png", "sample-tps.png"]
    for name in ("sample-latency.png", "sample-tps.png"):
        png = (tmp_path / "out" / name).read_bytes()
        assert png.startswith(PNG_MAGIC)
        assert len(png) > 5_000


def test_json_carries_the_data_targets_and_machine(tmp_path: Path) -> None:
    write_report(sample_report(), tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["scenario"] == "sample"
    assert results["quick"] is True
    assert results["transports"] == {"memory": {"tps": 1234.5}}
    assert results["figures"] == ["sample-latency.png", "sample-tps.png"]
    assert {"cpus", "memory_gib", "python", "load_average_at_end"} <= set(results["machine"])
    missed, met, unmeasured = results["targets"]
    assert missed["met"] is False
    assert missed["why"] == "missed by 25% — because of reasons"
    assert met == {"name": "memory: cost", "goal": "<= 1", "actual": 0.5, "met": True, "why": ""}
    assert unmeasured["met"] is None
    assert unmeasured["why"].startswith("not measured")


def test_markdown_has_targets_tables_and_plots(tmp_path: Path) -> None:
    write_report(sample_report(), tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.startswith("# sample: a report\n")
    assert "Quick run" in markdown
    assert "| target | goal | actual | met | why |" in markdown
    assert (
        "| memory: ratio | >= 0.8 | 0.6 | **no** | missed by 25% — because of reasons |" in markdown
    )
    assert "## Cells\n\n| cell | TPS | p99 ms |\n|---|---|---|\n| a | 1,234 | - |" in markdown
    assert "![latency](sample-latency.png)" in markdown


def test_cells_format_numbers_for_reading() -> None:
    assert cell(None) == "-"
    assert cell(True) == "yes"
    assert cell(12345.678) == "12,346"
    assert cell(12.3456) == "12.3"
    assert cell(0.012345) == "0.0123"
    assert cell(0.0) == "0"
    assert cell(1500) == "1,500"
    assert cell("a|b") == "a\\|b"
