"""`broker-sched bench` and `broker-sched compare`: run, write the report, print a summary.

``bench`` runs one scenario on one transport; ``compare`` runs it on several and writes
one report. ``all`` runs every built-in scenario into one directory (one sub-directory
per scenario and an index), measuring the scheduler overhead once per transport.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import TextIO

from broker_sched.bench.context import BenchContext
from broker_sched.bench.progress import Progress
from broker_sched.bench.report import Report, markdown_table, to_markdown, write_report
from broker_sched.bench.scenarios import names, run_scenario
from broker_sched.bench.workload import Policy, load_workload
from broker_sched.config import Settings

DEFAULT_OUT = Path("out/bench")


async def bench_command(
    settings: Settings,
    *,
    scenario: str,
    transports: list[str] | None,
    policy: Policy | None = None,
    quick: bool = False,
    json_output: bool = False,
    out: Path | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run ``scenario`` on ``transports`` (default: a workload file's, else the configured
    one); write results.json, report.md and PNGs under ``out``; print JSON or a summary."""
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    scenarios = names(scenario)
    if transports is None:
        transports = (
            load_workload(scenario).transports
            if scenario.endswith(".toml")
            else [settings.transport]
        )
    ctx = BenchContext(
        base=settings,
        transports=transports,
        quick=quick,
        progress=Progress(None if json_output else stderr),
        policy=policy,
    )
    directory = out or default_out(scenario)
    reports: list[Report] = []
    for name in scenarios:
        report = await run_scenario(name, ctx)
        write_report(report, directory if len(scenarios) == 1 else directory / report.scenario)
        reports.append(report)
    if len(reports) > 1:
        (directory / "index.md").write_text(index_markdown(reports))
    if json_output:
        document = (
            reports[0].to_json()
            if len(reports) == 1
            else {"reports": [r.to_json() for r in reports]}
        )
        stdout.write(json.dumps(document, default=str) + "\n")
    else:
        stdout.write(summary(reports, directory))
    return 0


def default_out(scenario: str) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return DEFAULT_OUT / f"{Path(scenario).stem}-{stamp}"


def summary(reports: list[Report], directory: Path) -> str:
    lines = []
    for report in reports:
        lines += ["", report.title]
        if report.targets:
            lines += markdown_table(
                ["target", "goal", "actual", "met"],
                [[t.name, t.goal, t.actual, t.met] for t in report.targets],
            )
    lines += ["", f"report: {directory}/", ""]
    return "\n".join(lines)


def index_markdown(reports: list[Report]) -> str:
    parts = ["# Benchmark run", ""]
    parts += [f"- [{r.title}]({r.scenario}/report.md)" for r in reports]
    parts.append("")
    for report in reports:
        parts.append(to_markdown(report).replace("](", f"]({report.scenario}/"))
    return "\n".join(parts)
