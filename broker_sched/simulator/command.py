"""``broker-sched simulate``: a workload file, a trace, or the built-in sample, in virtual time.

The input decides the scenario: a workload file runs its first cell on its own
cluster; a trace (or ``--sample``, the project's synthetic trace) runs on
``--invokers`` invokers with the configured slots and memory per invoker, every
function an action of ``--memory-mb``. The report goes to ``--out`` (JSON, Markdown,
PNG) and its table to stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from broker_sched.bench.tails import WORKLOADS
from broker_sched.bench.workload import load_workload
from broker_sched.config import Settings
from broker_sched.errors import ConfigError
from broker_sched.simulator import report
from broker_sched.simulator.day_trace import (
    DAY_FUNCTIONS,
    DAY_SEED,
    generate_day,
    per_minute_scenario,
    read_records,
    record_scenario,
)
from broker_sched.simulator.model import Cluster, Scenario
from broker_sched.simulator.run import (
    POLICIES,
    PolicyName,
    SimulationReport,
    simulate,
    simulate_scenario,
)
from broker_sched.simulator.sample import generate_trace
from broker_sched.simulator.trace import Spread, from_trace, read_trace
from broker_sched.simulator.tradeoff import (
    COLD_START_WORTHS_S,
    FIXED_KEEP_ALIVES_S,
    tradeoff,
)
from broker_sched.simulator.tradeoff import markdown as tradeoff_markdown
from broker_sched.simulator.tradeoff import write as write_tradeoff

DEFAULT_OUT = Path("out/simulate")


@dataclass(frozen=True, slots=True)
class SimulateArgs:
    workload: Path | None = None
    trace: Path | None = None
    durations: Path | None = None
    sample: bool = False
    policies: str = ",".join(POLICIES)
    out: Path | None = None
    invokers: int = 10
    memory_mb: int = 256
    minutes: int | None = None
    spread: Spread = "uniform"
    keepalive_s: float = 600.0
    seed: int = 1
    day: bool = False
    records: Path | None = None
    layout: str = "2021"
    functions: int = DAY_FUNCTIONS
    hours: float = 24.0
    day_seed: int = DAY_SEED
    tradeoff: bool = False
    keep_alives: str = ",".join(f"{v:g}" for v in FIXED_KEEP_ALIVES_S)
    worths: str = ",".join(f"{v:g}" for v in COLD_START_WORTHS_S)


def add_simulate_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``simulate`` on the CLI's subcommands."""
    simulate_parser = commands.add_parser(
        "simulate", help="compare policies in virtual time (docs/simulator.md)"
    )
    simulate_parser.add_argument(
        "workload",
        nargs="?",
        type=Path,
        help=f"a workload .toml file or a built-in one ({', '.join(WORKLOADS)})",
    )
    simulate_parser.add_argument(
        "--trace", type=Path, help="invocations CSV in the Azure Functions 2019 layout"
    )
    simulate_parser.add_argument(
        "--durations", type=Path, help="its durations CSV (default: the file named alike beside)"
    )
    simulate_parser.add_argument(
        "--sample", action="store_true", help="the built-in synthetic trace (200 functions, 1 h)"
    )
    simulate_parser.add_argument(
        "--policies", default=",".join(POLICIES), help="comma-separated (default %(default)s)"
    )
    simulate_parser.add_argument("--out", type=Path, help="default: out/simulate/<name>-<time>")
    simulate_parser.add_argument(
        "--invokers", type=int, default=10, help="trace: invokers (default %(default)s)"
    )
    simulate_parser.add_argument(
        "--memory-mb", type=int, default=256, help="trace: memory per function's container"
    )
    simulate_parser.add_argument("--minutes", type=int, help="trace: only the first minutes")
    simulate_parser.add_argument(
        "--spread", choices=["uniform", "poisson"], default="uniform", help="trace: within a minute"
    )
    simulate_parser.add_argument(
        "--keepalive-s", type=float, default=600.0, help="the baseline's keep-alive (10 min)"
    )
    simulate_parser.add_argument("--seed", type=int, default=1, help="trace: arrival seed")
    simulate_parser.add_argument(
        "--day", action="store_true", help="the built-in day (10,000 functions, 24 h)"
    )
    simulate_parser.add_argument(
        "--records", type=Path, help="per-invocation CSV in the Azure Functions 2021 layout"
    )
    simulate_parser.add_argument(
        "--layout", choices=["2019", "2021"], default="2021", help="--day: per minute or per call"
    )
    simulate_parser.add_argument(
        "--functions", type=int, default=DAY_FUNCTIONS, help="--day: functions"
    )
    simulate_parser.add_argument("--hours", type=float, default=24.0, help="--day: hours")
    simulate_parser.add_argument(
        "--day-seed", type=int, default=DAY_SEED, help="--day: the seed the day is drawn with"
    )
    simulate_parser.add_argument(
        "--tradeoff",
        action="store_true",
        help="keep-alive trade-off: fixed values, none and learned windows (--day/--records)",
    )
    simulate_parser.add_argument(
        "--keep-alives",
        default=",".join(f"{v:g}" for v in FIXED_KEEP_ALIVES_S),
        help="--tradeoff: the fixed keep-alives, seconds (default %(default)s)",
    )
    simulate_parser.add_argument(
        "--worths",
        default=",".join(f"{v:g}" for v in COLD_START_WORTHS_S),
        help="--tradeoff: learned windows at these keep_alive.cold_start_worth_s",
    )


def simulate_args(args: argparse.Namespace) -> SimulateArgs:
    """The parsed command line as :class:`SimulateArgs`."""
    return SimulateArgs(
        workload=args.workload,
        trace=args.trace,
        durations=args.durations,
        sample=args.sample,
        policies=args.policies,
        out=args.out,
        invokers=args.invokers,
        memory_mb=args.memory_mb,
        minutes=args.minutes,
        spread=args.spread,
        keepalive_s=args.keepalive_s,
        seed=args.seed,
        day=args.day,
        records=args.records,
        layout=args.layout,
        functions=args.functions,
        hours=args.hours,
        day_seed=args.day_seed,
        tradeoff=args.tradeoff,
        keep_alives=args.keep_alives,
        worths=args.worths,
    )


def parse_policies(text: str) -> list[PolicyName]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in POLICIES]
    if unknown or not names:
        raise ConfigError(
            f"--policies: unknown {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(POLICIES)}"
        )
    return [cast(PolicyName, name) for name in names]


def run_simulation(settings: Settings, args: SimulateArgs) -> SimulationReport:
    policies = parse_policies(args.policies)
    sources = (args.workload, args.trace, args.records)
    if sum(source is not None for source in sources) + args.sample + args.day != 1:
        raise ConfigError(
            "simulate: give a workload file, --trace FILE.csv, --records FILE.csv, "
            "--sample or --day"
        )
    if args.day or args.records is not None:
        return simulate_scenario(
            _day_scenario(settings, args, _day_cluster(settings, args)),
            settings,
            policies,
            keepalive_s=args.keepalive_s,
        )
    if args.workload is not None:
        builtin = WORKLOADS.get(str(args.workload))
        workload = builtin() if builtin is not None else load_workload(args.workload)
        return simulate(workload, settings, policies, keepalive_s=args.keepalive_s)
    return simulate_scenario(
        _trace_scenario(settings, args), settings, policies, keepalive_s=args.keepalive_s
    )


def _trace_scenario(settings: Settings, args: SimulateArgs) -> Scenario:
    if args.trace is not None:
        trace, name = read_trace(args.trace, args.durations), args.trace.stem
    else:
        trace, name = generate_trace(), "sample"
    if args.minutes is not None:
        trace = trace.first_minutes(args.minutes)
    cluster = Cluster(args.invokers, settings.invoker.slots, settings.invoker.memory_mb)
    return from_trace(
        trace,
        cluster=cluster,
        timeout_s=settings.invocation_timeout_s,
        seed=args.seed,
        memory_mb=args.memory_mb,
        spread=args.spread,
        name=name,
    )


def _day_cluster(settings: Settings, args: SimulateArgs) -> Cluster:
    return Cluster(args.invokers, settings.invoker.slots, settings.invoker.memory_mb)


def _day_scenario(settings: Settings, args: SimulateArgs, cluster: Cluster) -> Scenario:
    """The built-in day (``--day``) in either layout, or a 2021-layout file."""
    if args.records is not None:
        day, layout = read_records(args.records), "2021"
        duration_s = max((f.arrivals_s[-1] for f in day if f.arrivals_s), default=0.0) + 1
    else:
        duration_s = args.hours * 3600
        day, layout = generate_day(args.functions, duration_s, args.day_seed), args.layout
    make = record_scenario if layout == "2021" else per_minute_scenario
    return make(
        day,
        duration_s=duration_s,
        cluster=cluster,
        timeout_s=settings.invocation_timeout_s,
        seed=args.seed,
        memory_mb=args.memory_mb,
    )


def _seconds(option: str, text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{option}: not a comma-separated list of seconds: {text!r}") from None
    if not values or any(value <= 0 for value in values):
        raise ConfigError(f"{option}: give positive seconds, got {text!r}")
    return values


def tradeoff_command(settings: Settings, args: SimulateArgs) -> int:
    """The keep-alive trade-off on a cluster that never runs out of room."""
    if not (args.day or args.records is not None):
        raise ConfigError("simulate --tradeoff: give --day or --records FILE.csv")
    unbounded = Cluster(1, 1_000_000, 1_000_000 * args.memory_mb)
    scenario = _day_scenario(settings, args, unbounded)
    result = tradeoff(
        scenario,
        settings,
        fixed_s=_seconds("--keep-alives", args.keep_alives),
        worths_s=_seconds("--worths", args.worths),
        learned=settings.keep_alive,
    )
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or DEFAULT_OUT / f"tradeoff-{scenario.name}-{stamp}"
    paths = write_tradeoff(result, out)
    print(tradeoff_markdown(result))
    print(f"written: {', '.join(str(path) for path in paths)}", file=sys.stderr)
    return 0


def simulate_command(settings: Settings, args: SimulateArgs) -> int:
    """Run, write the report, print its table; 0 on success."""
    if args.tradeoff:
        return tradeoff_command(settings, args)
    result = run_simulation(settings, args)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or DEFAULT_OUT / f"{result.scenario}-{stamp}"
    paths = report.write(result, out)
    print(report.markdown(result))
    print(f"written: {', '.join(str(path) for path in paths)}", file=sys.stderr)
    return 0
