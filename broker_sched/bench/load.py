"""Load drivers: closed loop (users) and open loop (a fixed rate).

Closed loop: each user sends its next request when the previous one finished, so the
load adapts to the system — right for "how much can it do", wrong for "how long do
requests wait", because a stalled system also stalls the load.

Open loop: request ``n`` is due at ``start + n / rate`` whatever happened before. When
the driver falls behind (a stalled event loop), the overdue requests are sent at once
and each still gets its *intended* time, from which its latency is measured; a stall
therefore shows up in the latencies instead of being hidden (no coordinated omission).

Both stop starting requests at ``until()`` (a monotonic time, read again before each
request, so a warm-up that ends late can push it back) and give those in flight
``grace_s`` to finish; the rest are cancelled and counted.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any

RECHECK_S = 1.0
"""How often a driver re-reads ``until()`` while it waits."""
QUIET_STEP_S = 0.01
"""How far an open loop steps ahead through a stretch where its rate is zero."""
RECANCEL_S = 1.0
"""How long a cancelled task has to end before it is cancelled again."""


class Deadline:
    """A stop time decided later: pass it as ``until`` and call :meth:`now` to stop."""

    def __init__(self, at_s: float = math.inf) -> None:
        self.at_s = at_s

    def __call__(self) -> float:
        return self.at_s

    def now(self) -> None:
        self.at_s = min(self.at_s, time.monotonic())


async def closed_loop(
    users: int,
    request: Callable[[int], Awaitable[None]],
    *,
    until: Callable[[], float],
    grace_s: float,
) -> int:
    """Run ``users`` users, each calling ``request(user)`` back to back; returns how many
    requests were cancelled at the end."""

    async def user(index: int) -> None:
        while time.monotonic() < until():
            await request(index)

    tasks = [asyncio.create_task(user(index)) for index in range(users)]
    while (left_s := until() - time.monotonic()) > 0 and not all(t.done() for t in tasks):
        await asyncio.wait(tasks, timeout=min(left_s, RECHECK_S))
    return await _finish(tasks, until() + grace_s)


async def open_loop(
    rate_per_s: float | Callable[[float], float],
    request: Callable[[float], Awaitable[None]],
    *,
    start_s: float,
    until: Callable[[], float],
    grace_s: float,
) -> int:
    """Call ``request(intended_s)`` at ``rate_per_s`` from ``start_s`` (monotonic) until
    ``until()``; returns how many requests were cancelled at the end. The rate may be a
    function of the seconds since ``start_s`` (load phases: ramps, on/off bursts)."""
    in_flight: set[asyncio.Task[None]] = set()
    sent = 0
    intended_s = start_s
    while intended_s < until():
        rate = rate_per_s(intended_s - start_s) if callable(rate_per_s) else rate_per_s
        if rate <= 0:
            intended_s += QUIET_STEP_S
            continue
        delay_s = intended_s - time.monotonic()
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        task = asyncio.create_task(_call(request, intended_s))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        sent += 1
        # a fixed rate counts from the start, so float error cannot add a request
        intended_s = intended_s + 1 / rate if callable(rate_per_s) else start_s + sent / rate
    return await _finish(list(in_flight), until() + grace_s)


async def _call(request: Callable[[float], Awaitable[None]], intended_s: float) -> None:
    await request(intended_s)


async def _finish(tasks: Collection[asyncio.Task[None]], deadline_s: float) -> int:
    """Wait for ``tasks`` until ``deadline_s``, cancel the rest; re-raise a task's error."""
    if not tasks:
        return 0
    done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline_s - time.monotonic()))
    await stop_tasks(pending, grace_s=0.0)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    return len(pending)


async def stop_tasks(tasks: Collection[asyncio.Task[Any]], *, grace_s: float) -> None:
    """Give ``tasks`` ``grace_s`` to end on their own, then cancel the rest until they end.

    A bare ``Task.cancel()`` is delivered once, and a broker client may swallow it
    (Python 3.11's ``wait_for``), so it is repeated every ``RECANCEL_S`` as a cancel
    scope's would be.
    """
    pending = {task for task in tasks if not task.done()}
    if pending and grace_s > 0:
        _, pending = await asyncio.wait(pending, timeout=grace_s)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_S)
