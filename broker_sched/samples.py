"""Sample action handlers for the demo and the tests (``broker_sched.samples:<name>``).

Each takes the activation's JSON payload and returns a JSON value. Some misbehave on
purpose — raise, report an application error, hang, kill their own process — so tests
can check how a runtime and the scheduler cope. Standard library only: the process
runtime's cold start includes importing this module.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from typing import Any, NoReturn


def echo(payload: Any) -> Any:
    return payload


def hello(payload: Any) -> dict[str, str]:
    name = payload.get("name", "stranger") if isinstance(payload, dict) else "stranger"
    return {"greeting": f"Hello, {name}!"}


def sleep(payload: dict[str, Any]) -> dict[str, float]:
    """Hold the container for ``payload["ms"]`` ms, like an action waiting on I/O."""
    time.sleep(payload["ms"] / 1000)
    return {"ms": payload["ms"]}


async def async_sleep(payload: dict[str, Any]) -> dict[str, float]:
    """``sleep`` as an ``async def`` handler: many can overlap in one container."""
    await asyncio.sleep(payload["ms"] / 1000)
    return {"ms": payload["ms"]}


def fib(payload: dict[str, Any]) -> dict[str, int]:
    """CPU-bound on purpose (naive recursion): ``n`` = 25 takes about 15 ms, each +1 is 1.6x."""
    n = int(payload.get("n", 20))
    return {"n": n, "fib": _fib(n)}


def _fib(n: int) -> int:
    return n if n < 2 else _fib(n - 1) + _fib(n - 2)


def word_count(payload: dict[str, Any]) -> dict[str, Any]:
    words = str(payload.get("text", "")).lower().split()
    return {"words": len(words), "counts": dict(Counter(words))}


def chatty(payload: Any) -> dict[str, bool]:
    """Prints to stdout, including a line that looks like the worker protocol."""
    print('{"id": 1, "ok": true, "result": "not from the protocol"}')
    print("chatty handler says hello", flush=True)
    sys.stdout.write("no newline at the end")
    return {"printed": True}


def fail(payload: Any) -> NoReturn:
    """Raises: the runtime reports an action error with this message."""
    raise ValueError("sample handler failed on purpose")


def app_error(payload: Any) -> dict[str, str]:
    """Returns ``{"error": ...}``: the handler reports its own failure (application error)."""
    return {"error": "sample handler reports an application error"}


def hang(payload: Any) -> NoReturn:
    """Never returns: only the run's time limit ends it."""
    while True:
        time.sleep(3600)


def crash(payload: Any) -> NoReturn:
    """Kills its own process mid-run, as a container crash would."""
    os._exit(3)


def crash_once(payload: dict[str, Any]) -> dict[str, str]:
    """Crashes the first time for a given ``payload["marker"]`` file, then succeeds.

    The marker is created atomically before the crash, so a redelivered activation
    completes on its second attempt, in whichever container gets it.
    """
    marker = payload["marker"]
    try:
        with open(marker, "x"):
            pass
    except FileExistsError:
        return {"marker": marker, "attempt": "after crash"}
    os._exit(3)
