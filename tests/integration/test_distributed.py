"""A controller and two invoker processes that share nothing but a real broker.

The controller runs in the test process; each invoker is a separate
`broker-sched run --role invoker` process with its own containers. Killing one invoker
mid-burst must not lose work: the broker redelivers what it held (Kafka rebalance from
the committed offset, Redis XAUTOCLAIM, NATS ack_wait) and the other invoker finishes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker_sched.config import Settings
from broker_sched.model import Action, Status
from broker_sched.stack import Stack
from broker_sched.topology import invoker_control_queue

pytestmark = [pytest.mark.broker, pytest.mark.slow]

ACTIONS = [
    Action(name=f"work{i}", handler="broker_sched.samples:sleep", max_containers=3)
    for i in range(10)
]
BURST = 200


def as_toml(settings: Settings) -> str:
    """The settings as TOML, so the invoker processes run with exactly the test's values."""
    data = settings.model_dump(mode="json", exclude_none=True)
    data["actions"] = [action.model_dump(mode="json") for action in ACTIONS]
    lines = [
        f"{key} = {json.dumps(value)}"
        for key, value in data.items()
        if not isinstance(value, dict | list)
    ]
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"[{key}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in value.items()]
    for action in data["actions"]:
        lines.append("[[actions]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in action.items()]
    return "\n".join(lines) + "\n"


def invoker_ids() -> set[str]:
    return {f"inv{index}-{os.getpid()}" for index in range(2)}


def start_invoker(config: Path, invoker_id: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_SCHED_")}
    with log.open("wb") as stderr:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "broker_sched.cli",
                "--config",
                str(config),
                "run",
                "--role",
                "invoker",
            ],
            env={**env, "BROKER_SCHED_INVOKER__ID": invoker_id},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


@pytest.fixture(params=["kafka", "redis", "nats"])
def settings(request: pytest.FixtureRequest, broker_settings: Callable[..., Settings]) -> Settings:
    return broker_settings(
        request.param,
        invoker={"heartbeat_interval_s": 0.3, "keep_alive_s": 30.0, "pause_grace_s": 10.0},
        scheduler={"create_timeout_s": 5.0},
        kafka={"default_partitions": 3},
    )


@pytest.fixture
def invokers(settings: Settings, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    config = tmp_path / "deploy.toml"
    config.write_text(as_toml(settings))
    processes = [
        start_invoker(config, invoker_id, tmp_path / f"{invoker_id}.log")
        for invoker_id in sorted(invoker_ids())
    ]
    yield processes
    for process in processes:
        stop(process)


async def test_burst_survives_an_invoker_killed_mid_run(
    settings: Settings, invokers: list[subprocess.Popen[bytes]]
) -> None:
    stack = Stack(settings, role="controller", actions={a.fqn: a for a in ACTIONS})
    async with stack:
        controller = stack.controller
        assert controller is not None
        async with asyncio.timeout(30):
            await controller.cluster.wait_for_invokers(invoker_ids())

        async def one(index: int) -> Any:
            action = ACTIONS[index % len(ACTIONS)]
            return await controller.invoke(action.name, {"ms": 200}, timeout_s=90)

        calls = [asyncio.create_task(one(i)) for i in range(BURST)]
        async with asyncio.timeout(60):
            for finished, call in enumerate(asyncio.as_completed(calls), start=1):
                await call
                if finished == BURST // 4:
                    break
        stop(invokers[0], signal.SIGKILL)
        results = await asyncio.gather(*calls)
        for queue in [settings.queue_name(a.namespace, a.name) for a in ACTIONS] + [
            invoker_control_queue(invoker_id) for invoker_id in invoker_ids()
        ]:
            await stack.transport.delete(queue)

    assert Counter(r.status for r in results) == {Status.SUCCESS: BURST}
    ids = [r.activation_id for r in results]
    assert len(set(ids)) == BURST
    finished_by = Counter(r.invoker_id for r in results)
    assert len(finished_by) == 2, finished_by
