"""The action a chaos run invokes; it imports only the standard library and the checker's
pure line format, as a container imports it.

It returns its payload, so the observer can tie every result — even a rerun whose
caller is gone — back to the invocation (``seq``) that caused it. With
``payload["executions"]`` (a file path) it appends the start and the finish of each
execution there, the handler's own history for the invocation checker: a line per
event, written with one ``O_APPEND`` write, so the containers of a run can share it.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from broker_sched.bench.invocation_checker import execution_line


def tagged_sleep(payload: dict[str, Any]) -> dict[str, Any]:
    """Hold the container for ``payload["ms"]`` ms, then echo the payload."""
    history = payload.get("executions")
    execution = uuid.uuid4().hex
    seq = int(payload.get("seq", -1))
    if history:
        _append(history, execution_line("start", execution, seq, time.monotonic()))
    time.sleep(float(payload.get("ms", 0)) / 1000)
    if history:
        _append(history, execution_line("finish", execution, seq, time.monotonic()))
    return payload


def _append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
