"""A controller and two invoker processes that share nothing but a real broker.

The controller runs in the test process; each invoker is a separate
`broker-sched run --role invoker` process with its own containers. Killing one invoker
mid-burst must not lose work: the broker redelivers what it held (Kafka rebalance from
the committed offset, Redis XAUTOCLAIM, NATS ack_wait) and the other invoker finishes it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker_sched.config import Settings
from broker_sched.model import Action, Status
from broker_sched.stack import Stack
from tests.brokers import broker_settings

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ACTIONS = [
    Action(name=f"work{i}", handler="broker_sched.samples:sleep", max_containers=4)
    for i in range(10)
]


def write_config(path: Path, settings: Settings) -> Path:
    """The settings as a TOML file, so the invoker processes read exactly what we use."""
    lines = [f'transport = "{settings.transport}"']
    for section in ("kafka", "redis", "nats", "invoker", "scheduler"):
        values = getattr(settings, section).model_dump(exclude_none=True)
        lines.append(f"[{section}]")
        for key, value in values.items():
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            lines.append(f"{key} = {_toml(value)}")
    for action in ACTIONS:
        lines.append("[[actions]]")
        for key, value in action.model_dump().items():
            lines.append(f"{key} = {_toml(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


@pytest.fixture
def invoker_processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    settings: Settings = request.param
    config = write_config(tmp_path / "deploy.toml", settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_SCHED_")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "broker_sched.cli", "--config", str(config), "run",
             "--role", "invoker"],
            env={**env, "BROKER_SCHED_INVOKER__ID": f"inv{index}"},
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / f"invoker{index}.log", "wb"),  # noqa: SIM115
            start_new_session=True,
        )
        for index in range(2)
    ]
    yield processes
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def distributed_settings(name: str) -> Settings:
    return broker_settings(
        name,
        invoker={"heartbeat_interval_s": 0.3, "keep_alive_s": 20.0, "pause_grace_s": 5.0},
        scheduler={"create_timeout_s": 5.0},
        kafka={"default_partitions": 4},
    )


@pytest.mark.parametrize(
    "invoker_processes",
    [pytest.param(name, id=name) for name in ("kafka", "redis", "nats")],
    indirect=True,
)
async def test_burst_survives_an_invoker_killed_mid_run(
    invoker_processes: list[subprocess.Popen[bytes]],
) -> None:
    ...
