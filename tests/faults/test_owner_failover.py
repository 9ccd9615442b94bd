"""Kill -9 the owner of a busy action under load, on every network transport.

Two controllers share two actions through the broker's ownership primitive (one shard,
so one of them decides for both): the owner runs as its own process with the invokers
beside it, the other is this test's, and every invocation goes through it, so none is
refused by the kill. The owner is killed under load on the busy action; right after,
half the load goes to the second action, invoked for the first time, whose backlog has
no container: only a new owner can serve it (as in the issue: a dead controller's
actions stranded, no consumer). What must hold: the survivor takes the shard and asks
for a container for that backlog within a bound (printed, and checked with room for a
loaded machine), and every accepted activation ends with a result — none is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from broker_sched.bench.chaos import QUICK, as_env, free_port, overrides
from broker_sched.config import load_settings
from broker_sched.model import Action
from broker_sched.stack import Stack

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(180)]

RUN_MS = 200
BEFORE_PER_S = 8
"""Load before the kill: about two containers' worth."""
AFTER_PER_S = 20
"""Load after it, half of it for an action invoked for the first time: its backlog has
no container, and only the survivor can make one."""
MAX_CONTAINERS = 16
BEFORE_S = 4.0
AFTER_S = 6.0
GOAL_S = 3.0
"""The target from the kill to the survivor's first container request (printed)."""
BOUND_S = 8.0
"""What the test checks: the goal with room for a loaded machine."""
READY_S = 60.0
DRAIN_S = 60.0
INVOKERS = 2


async def spawn(
    config: Path, env: dict[str, str], logs: Path, name: str, role: str, api: str
) -> asyncio.subprocess.Process:
    command = [sys.executable, "-m", "broker_sched.cli", "--config", str(config)]
    command += ["run", "--role", role, "--api", api]
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_SCHED_")}
    with (logs / f"{name}.log").open("ab") as log:
        return await asyncio.create_subprocess_exec(
            *command,
            env={**inherited, **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


def healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{api}/health", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


async def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


# NATS is left out until it passes again: in the merged tree (3 s ack wait, delivery
# leases) its case failed all three attempts in CI's fault step (docs/reliability.md).
@pytest.mark.parametrize("transport", ["redis", "kafka", "kafka-share"])
async def test_a_killed_owner_s_actions_are_taken_over(
    fault_configs: Path, transport: str, tmp_path: Path
) -> None:
    token = f"{os.getpid()}-{time.monotonic_ns() % 10**9}"
    # The owner's id sorts first: a Kafka group's round-robin assignor gives the one
    # shard to the first member, and a lease goes to whoever takes it first (the owner
    # starts first).
    owner_id, front_id = f"a-owner-{token}", f"z-front-{token}"
    busy, fresh = (
        Action(
            name=name,
            namespace=f"fo-{token}",
            handler="broker_sched.bench.chaos_action:tagged_sleep",
            max_containers=MAX_CONTAINERS,
        )
        for name in ("busy", "fresh")
    )
    values = overrides(transport, owner_id, busy, QUICK)
    values["actions"] = [action.model_dump(mode="json") for action in (busy, fresh)]
    values["scheduler"] |= {"ownership_shards": 1}
    values["kafka"] |= {"default_partitions": MAX_CONTAINERS}
    config = fault_configs / "single.toml"
    env = as_env(values)
    api = f"127.0.0.1:{free_port()}"
    processes = [
        await spawn(config, env | {"BROKER_SCHED_INVOKER__ID": f"inv{i}-{token}"}, tmp_path,
                    f"invoker{i}", "invoker", "off")
        for i in range(INVOKERS)
    ]  # fmt: skip
    owner = await spawn(config, env, tmp_path, "owner", "controller", api)
    processes.append(owner)
    try:
        settings = load_settings(config, **(values | {"controller_id": front_id}))
        await wait_for(lambda: healthy(api) or owner.returncode is not None, READY_S, "owner")
        assert owner.returncode is None, f"the owner exited (log: {tmp_path}/owner.log)"
        await asyncio.sleep(1.0)  # the owner's first lease round, before the front's
        async with Stack(settings, role="controller") as stack:
            front = stack.controller
            assert front is not None
            assert front.leases is not None
            await wait_for(lambda: len(front.cluster.live()) >= INVOKERS, READY_S, "invokers")
            warm = await front.invoke(busy.fqn, {"ms": RUN_MS}, timeout_s=READY_S)
            assert warm.ok, warm
            assert not front.leases.owned(), "the front took the shard: the owner never had it"

            accepted: list[str] = []

            async def load(actions: list[Action], rate_per_s: float, seconds: float) -> None:
                start = time.monotonic()
                sent = 0
                while (elapsed := time.monotonic() - start) < seconds:
                    while sent < elapsed * rate_per_s:
                        action = actions[sent % len(actions)]
                        accepted.append(
                            await front.invoke(action.fqn, {"ms": RUN_MS}, blocking=False)
                        )
                        sent += 1
                    await asyncio.sleep(0.01)

            await load([busy], BEFORE_PER_S, BEFORE_S)
            killed_at = time.monotonic()
            os.killpg(owner.pid, signal.SIGKILL)
            await load([busy, fresh], AFTER_PER_S, AFTER_S)
            await wait_for(
                lambda: all(a in front.results for a in accepted), DRAIN_S, "every result"
            )

            taken = [e.at_s - killed_at for e in front.timeline.of_kind("shard_taken")]
            asked = [
                e.at_s - killed_at
                for e in front.timeline.of_kind("container_requested")
                if e.action == fresh.fqn
            ]
            print(
                f"\n{transport}: owner killed; shard taken after "
                f"{min(taken, default=float('nan')):.2f} s, first container for the new "
                f"action's backlog asked {min(asked, default=float('nan')):.2f} s after the "
                f"kill (goal {GOAL_S} s); {len(accepted)} accepted, "
                f"{sum(a in front.results for a in accepted)} ran"
            )
            lost = [a for a in accepted if a not in front.results]
            assert not lost, f"{len(lost)} accepted activations never ran"
            assert taken, "the survivor never took the dead owner's shard"
            assert asked, "the survivor never asked for a container for the new backlog"
            assert min(asked) <= BOUND_S
    finally:
        for process in processes:
            await stop(process)
