"""`broker-sched run` ends cleanly on SIGTERM, also where SIGINT is ignored.

An orchestrator or init system ends a service with SIGTERM, and a shell starts a
background job with SIGINT ignored; either way the process must close its stack and
exit, and `--workers` must pass the stop on to its invoker processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

STARTED = "running on"
BOUND_S = 60.0


def start(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_SCHED_")}
    return subprocess.Popen(
        [sys.executable, "-m", "broker_sched.cli", "--transport", "memory", "run", *args],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )


def children_of(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


def exited_within(pid: int, bound_s: float) -> bool:
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def wait_started(process: subprocess.Popen[str], lines: int) -> None:
    assert process.stderr is not None
    deadline = time.monotonic() + BOUND_S
    seen = 0
    while seen < lines:
        line = process.stderr.readline()
        assert line, f"exited with {process.poll()} before it started"
        assert time.monotonic() < deadline, "did not start in time"
        seen += STARTED in line


@pytest.mark.parametrize(
    ("args", "started_lines"),
    [
        (["--role", "all", "--api", "off"], 1),
        (["--role", "invoker", "--workers", "2", "--api", "off"], 2),
    ],
    ids=["all-in-one", "workers"],
)
def test_sigterm_stops_the_process_and_its_workers(args: list[str], started_lines: int) -> None:
    process = start(*args)
    try:
        wait_started(process, started_lines)
        children = children_of(process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(BOUND_S) == 0
        assert all(exited_within(child, BOUND_S) for child in children)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
