"""The `broker-sched` command.

Every subcommand reads the same settings (``--config`` TOML, then ``BROKER_SCHED_*``),
so moving a deployment between brokers is one setting, and errors from the project's
exception tree are printed as one line with a non-zero exit instead of a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib.util
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
import anyio.abc

from broker_sched.config import ENV_PREFIX, Settings, load_settings
from broker_sched.errors import BrokerSchedError, ConfigError, ExtraNotInstalled
from broker_sched.simulator.command import add_simulate_parser

DOCKER_OPS = "docker-ops"
"""Not a scheduler scenario: it measures the Docker engine, on no transport."""
CHAOS = "chaos"
"""Not a report scenario: faults under load, its own processes and accounting."""
BENCH_MODULES = ("hdrh", "matplotlib")
"""What ``broker-sched[bench]`` brings: the latency histograms and the plots."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="broker-sched",
        description="Serverless actions scheduled through a message broker's backlog.",
    )
    parser.add_argument("--config", type=Path, help="TOML settings file")
    parser.add_argument("--transport", help="override the configured transport")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the embedded stack under a bursty load")
    demo.add_argument("--json", action="store_true", help="print the summary as one JSON object")

    run = commands.add_parser("run", help="run controller and/or invoker from the config")
    run.add_argument("--role", choices=["all", "controller", "invoker"], default="all")
    run.add_argument("--invokers", type=int, default=1, help="invokers in this process")
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        help="with --role invoker: this many invoker processes, one core each (default 1)",
    )
    run.add_argument(
        "--api",
        default="127.0.0.1:3233",
        help="HOST:PORT of the controller's HTTP API, or 'off' (default %(default)s)",
    )
    run.add_argument(
        "--metrics",
        default="off",
        help="HOST:PORT where each invoker of this process serves GET /metrics, the next "
        "invoker (or --workers process) on the next port; 'off' (default) serves none",
    )

    invoke = commands.add_parser("invoke", help="invoke an action through a controller's API")
    invoke.add_argument("action", help="name or namespace/name")
    invoke.add_argument("payload", nargs="?", default="{}", help="JSON payload")
    invoke.add_argument("--api", default="127.0.0.1:3233", help="HOST:PORT of the controller")
    invoke.add_argument("--async", dest="blocking", action="store_false", help="do not wait")
    invoke.add_argument(
        "-r", "--result", action="store_true", help="wait, and print only the result (as wsk -r)"
    )
    invoke.add_argument(
        "--auth-file",
        type=Path,
        help="a .wskprops-style file with AUTH=uuid:key (default: the api.auth_file setting)",
    )

    keys = commands.add_parser("keys", help="API keys (docs/architecture.md, The front door)")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    add = key_commands.add_parser(
        "add", help="create a key for a namespace: its digest to api.keys_file, the key to a file"
    )
    add.add_argument("namespace")
    add.add_argument("auth_file", type=Path, help="where to write the key (.wskprops form)")
    add.add_argument("--api", default="127.0.0.1:3233", help="APIHOST written beside it")

    commands.add_parser("doctor", help="check the configured transport")

    config = commands.add_parser("config", help="print the effective settings as JSON")
    config.add_argument(
        "--reference", action="store_true", help="print the configuration reference instead"
    )
    _add_migrate(commands)
    _add_bench(commands)
    add_simulate_parser(commands)
    return parser


def _add_bench(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, what in (
        ("bench", "run a benchmark scenario (docs/experiments.md)"),
        ("compare", "run a benchmark scenario on several transports into one report"),
    ):
        bench = commands.add_parser(name, help=what)
        bench.add_argument(
            "scenario",
            help="raw, overhead, seed-table, rebalance, partition-limit, many-topics, all, "
            "a workload .toml file, or (bench only) docker-ops or chaos",
        )
        if name == "bench":
            bench.add_argument(
                "--transport",
                default=argparse.SUPPRESS,
                help="default: the configured one (chaos: comma-separated)",
            )
            bench.add_argument(
                "--faults",
                help="chaos: comma-separated, or 'all' that apply (default: the process faults)",
            )
            bench.add_argument(
                "--broker-node",
                help="chaos broker-kill: the brokers.sh broker to kill (default: the transport)",
            )
            bench.add_argument(
                "--brokers-sh",
                type=Path,
                default=Path("compose/native/brokers.sh"),
                help="chaos broker-kill: the script that restarts it (default %(default)s)",
            )
            bench.add_argument(
                "--toxiproxy",
                help="chaos network faults: Toxiproxy's API, HOST:PORT "
                "(default: 127.0.0.1:$TOXIPROXY_PORT, else 8474)",
            )
        else:
            bench.add_argument(
                "--transports", required=True, help="comma-separated: memory,redis,nats,kafka"
            )
        bench.add_argument("--policy", choices=["acs", "sharding"], help="only this policy")
        bench.add_argument("--quick", action="store_true", help="seconds-long cells (CI)")
        bench.add_argument("--json", action="store_true", help="JSON on stdout, no progress")
        bench.add_argument("--out", type=Path, help="default: out/bench/<scenario>-<time>")


def _add_migrate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    migrate = commands.add_parser(
        "migrate", help="move a deployment to another transport (docs/migration.md)"
    )
    steps = migrate.add_subparsers(dest="migrate_command", required=True)
    status = steps.add_parser("status", help="what is left on the old transport, per queue")
    move = steps.add_parser(
        "move", help="copy unfinished activations from the old transport to the new one"
    )
    for step in (status, move):
        step.add_argument(
            "--from", dest="source", help="old transport (default: migration.drain_from)"
        )
        step.add_argument("--to", dest="target", help="new transport (default: transport)")
        step.add_argument(
            "--queue",
            action="append",
            default=[],
            help="a queue to include besides the configured actions' (repeatable)",
        )
    move.add_argument("--batch", type=int, help="activations per batch (migration.move_batch)")
    move.add_argument("--dry-run", action="store_true", help="only count what would move")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # Broker clients log every retry; their failures reach us as our own errors.
        for client in ("aiokafka", "nats", "redis"):
            logging.getLogger(client).setLevel(logging.CRITICAL)
    try:
        overrides = {"transport": args.transport} if args.transport else {}
        settings = load_settings(args.config, **overrides)
        return asyncio.run(_dispatch(args, settings))
    except BrokerSchedError as exc:
        print(f"broker-sched: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


async def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "demo":
        return await _demo(settings, json_output=args.json)
    if args.command == "run" and args.workers != 1:
        return await _run_workers(args, settings)
    if args.command == "run":
        return await _run(
            settings, role=args.role, invokers=args.invokers, api=args.api, metrics=args.metrics
        )
    if args.command == "invoke":
        from broker_sched.api_client import client_auth, invoke

        auth = client_auth(settings.api, args.auth_file)
        return await invoke(
            args.api,
            args.action,
            args.payload,
            blocking=args.blocking or args.result,
            result_only=args.result,
            auth=auth,
        )
    if args.command == "keys":
        from broker_sched.api_keys import add_key, keys_path, new_auth, write_auth_file

        if args.auth_file.exists():
            raise ConfigError(f"{args.auth_file} exists; choose another file for the new key")
        auth = new_auth()
        add_key(keys_path(settings.api), args.namespace, auth)
        write_auth_file(args.auth_file, auth, args.api, args.namespace)
        print(
            f"key for namespace {args.namespace!r} in {args.auth_file} (AUTH=...); its digest "
            f"added to {keys_path(settings.api)}: controllers read it when they start"
        )
        return 0
    if args.command == "config":
        from broker_sched.settings_doc import render_reference

        print(
            render_reference() if args.reference else settings.model_dump_json(indent=2),
            end="\n" if not args.reference else "",
        )
        return 0
    if args.command == "migrate":
        from broker_sched.migration import commands

        if args.migrate_command == "status":
            return await commands.status(
                settings, source=args.source, target=args.target, queues=args.queue
            )
        return await commands.move(
            settings,
            source=args.source,
            target=args.target,
            queues=args.queue,
            batch=args.batch,
            dry_run=args.dry_run,
        )
    if args.command in ("bench", "compare", "simulate"):
        _require_bench_extra(args.command)
    if args.command == "bench" and args.scenario == DOCKER_OPS:
        from broker_sched.bench.command import default_out
        from broker_sched.bench.docker_ops import docker_ops_command

        return await docker_ops_command(
            quick=args.quick, json_output=args.json, out=args.out or default_out(DOCKER_OPS)
        )
    if args.command == "bench" and args.scenario == CHAOS:
        from broker_sched.bench.chaos import chaos_command
        from broker_sched.bench.command import default_out

        return await chaos_command(
            config=args.config,
            transports=(args.transport or settings.transport).split(","),
            faults=args.faults,
            broker_node=args.broker_node,
            brokers_sh=args.brokers_sh,
            quick=args.quick,
            json_output=args.json,
            out=args.out or default_out(CHAOS),
            toxiproxy=args.toxiproxy,
        )
    if args.command in ("bench", "compare"):
        from broker_sched.bench.command import bench_command

        transports: list[str] | None = [args.transport] if args.transport else None
        if args.command == "compare":
            transports = [t.strip() for t in args.transports.split(",") if t.strip()]
        return await bench_command(
            settings,
            scenario=args.scenario,
            transports=transports,
            policy=args.policy,
            quick=args.quick,
            json_output=args.json,
            out=args.out,
        )
    if args.command == "simulate":
        from broker_sched.simulator.command import simulate_args, simulate_command

        return simulate_command(settings, simulate_args(args))
    if args.command == "doctor":
        from broker_sched.doctor import doctor

        return await doctor(settings)
    raise AssertionError(args.command)


def _require_bench_extra(command: str) -> None:
    """Checked before a run starts, not when its first histogram or plot needs them."""
    if any(importlib.util.find_spec(module) is None for module in BENCH_MODULES):
        raise ExtraNotInstalled(command, "bench")


async def _demo(settings: Settings, *, json_output: bool) -> int:
    from broker_sched.demo import format_summary, run_demo

    summary = await run_demo(settings, json_output=json_output)
    print(json.dumps(summary) if json_output else format_summary(summary))
    return 0 if summary["succeeded"] else 1


async def _run(settings: Settings, *, role: str, invokers: int, api: str, metrics: str) -> int:
    from broker_sched.api import Api
    from broker_sched.api_keys import load_keyring
    from broker_sched.metrics import invoker_exposition, metrics_server
    from broker_sched.stack import Stack

    async with (
        Stack(settings, role=role, invokers=invokers) as stack,  # type: ignore[arg-type]
        anyio.create_task_group() as serving,
    ):
        serving.start_soon(stack.serve_forever)
        await serving.start(_stop_on_signal, serving.cancel_scope)
        where = ""
        if stack.controller is not None and api != "off":
            host, _, port = api.rpartition(":")
            keyring = load_keyring(settings.api, api) if settings.api.auth else None
            server = await Api(stack.controller, keyring).start(host, int(port))
            serving.start_soon(server.serve_forever)
            keys = f"{len(keyring)} API keys" if keyring is not None else "no authentication"
            where = f", API on {server.url} ({keys})"
        if stack.invokers and metrics != "off":
            host, _, port = metrics.rpartition(":")
            for index, invoker in enumerate(stack.invokers):
                render = functools.partial(invoker_exposition, invoker)
                exposed = await metrics_server(render, host, int(port) + index)
                serving.start_soon(exposed.serve_forever)
            where += f", invoker metrics from {host}:{port}"
        print(
            f"broker-sched {role} running on {settings.transport}{where}",
            file=sys.stderr,
            flush=True,
        )
    return 0


async def _stop_on_signal(
    scope: anyio.CancelScope, *, task_status: anyio.abc.TaskStatus[None]
) -> None:
    """Stop gracefully on SIGTERM as on SIGINT: what an init system or an orchestrator
    sends to end a service, and a background job started by a shell ignores SIGINT.
    Started before the process says it runs, so a signal sent after that is handled."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for received in signals:
            print(f"broker-sched: {received.name}, stopping", file=sys.stderr, flush=True)
            scope.cancel()
            return


async def _run_workers(args: argparse.Namespace, settings: Settings) -> int:
    """Run ``--workers`` invoker processes of this same command and wait for them.

    Invokers share nothing but the broker, so separate processes are how one machine's
    invokers use more than one core (an asyncio process uses one). Each worker gets its
    own invoker id (the configured one suffixed ``-w<n>``, else a generated one); all
    stop when one stops or this process is interrupted.
    """
    if args.role != "invoker":
        raise ConfigError("--workers runs invoker processes: it needs --role invoker")
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {args.workers}")
    command = [sys.executable, "-m", "broker_sched.cli"]
    if args.config is not None:
        command += ["--config", str(args.config)]
    if args.transport:
        command += ["--transport", args.transport]
    if args.verbose:
        command.append("-v")
    command += ["run", "--role", "invoker", "--invokers", str(args.invokers), "--api", "off"]
    workers = []
    for index in range(args.workers):
        metrics = ["--metrics", "off"]
        if args.metrics != "off":
            host, _, port = args.metrics.rpartition(":")
            metrics = ["--metrics", f"{host}:{int(port) + index * args.invokers}"]
        env = dict(os.environ)
        if settings.invoker.id:
            env[f"{ENV_PREFIX}INVOKER__ID"] = f"{settings.invoker.id}-w{index}"
        workers.append(await asyncio.create_subprocess_exec(*command, *metrics, env=env))

    def stop_all() -> None:
        for worker in workers:
            if worker.returncode is None:
                worker.send_signal(signal.SIGTERM)

    async def wait_then_stop_all(worker: asyncio.subprocess.Process) -> None:
        await worker.wait()
        stop_all()

    for stopping in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(stopping, stop_all)
    try:
        async with anyio.create_task_group() as waiting:
            for worker in workers:
                waiting.start_soon(wait_then_stop_all, worker)
    finally:
        stop_all()
        with anyio.CancelScope(shield=True):
            for worker in workers:
                await worker.wait()
    return max(worker.returncode or 0 for worker in workers)


if __name__ == "__main__":
    sys.exit(main())
