"""Namespace limits as OpenWhisk has them: invocations per minute and concurrent
activations, per namespace, refused with 429 and a ``Retry-After``.

Pure logic with the time passed in, so the rules are tested without a clock. The
minute is a sliding window (the accepted start times of the last 60 s), not a fixed
calendar minute: a client cannot fit two minutes' worth into the seconds around a
minute boundary, and the retry time is exact — when the oldest start leaves the window.
An activation counts as concurrent from its start until :meth:`NamespaceLimiter.finish`
or its deadline, whichever comes first, so a result that never arrives cannot hold a
slot for ever.

With several controllers behind a load balancer, each admits its share of a limit:
``ceil(limit / n)`` for ``n`` live controllers (:func:`share_of`), so the cluster admits
at most ``limit + n - 1`` — 60 a minute through three controllers is 20 each, 60 in all
— with no broker round trip per invocation. The price: a namespace whose calls all go
to one controller gets that controller's share only, and while a dead controller is not
yet counted out (a few lease rounds) the survivors' shares are still the smaller ones.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 60.0


def share_of(limit: int, controllers: int) -> int:
    """One of ``controllers`` controllers' part of ``limit``: at least one each, so the
    cluster admits at most ``limit + controllers - 1``."""
    return math.ceil(limit / max(1, controllers))


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    retry_after_s: int


@dataclass(slots=True)
class _Namespace:
    starts: deque[float] = field(default_factory=deque)
    running: dict[str, float] = field(default_factory=dict)
    """A token per running activation -> its deadline (s)."""


class NamespaceLimiter:
    def __init__(self, *, per_minute: int, concurrent: int) -> None:
        self.per_minute = per_minute
        self.concurrent = concurrent
        self._namespaces: dict[str, _Namespace] = {}

    def start(
        self, namespace: str, token: str, now_s: float, deadline_s: float, controllers: int = 1
    ) -> Refusal | None:
        """Admit and count an activation, or say why not and when to retry; with
        ``controllers`` sharing the limits, against this controller's share."""
        state = self._namespaces.setdefault(namespace, _Namespace())
        while state.starts and state.starts[0] <= now_s - WINDOW_S:
            state.starts.popleft()
        for running_id, deadline in list(state.running.items()):
            if deadline <= now_s:
                del state.running[running_id]
        through = "" if controllers <= 1 else f" ({controllers} controllers share it)"
        if len(state.starts) >= share_of(self.per_minute, controllers):
            retry = state.starts[0] + WINDOW_S - now_s
            return Refusal(
                f"namespace {namespace!r} is over its {self.per_minute} invocations per "
                f"minute{through}",
                max(1, math.ceil(retry)),
            )
        if len(state.running) >= share_of(self.concurrent, controllers):
            # Any running activation may end the next moment: the shortest retry.
            return Refusal(
                f"namespace {namespace!r} has {len(state.running)} activations running "
                f"here (limit {self.concurrent}{through})",
                1,
            )
        state.starts.append(now_s)
        state.running[token] = deadline_s
        return None

    def finish(self, namespace: str, token: str) -> None:
        state = self._namespaces.get(namespace)
        if state is not None:
            state.running.pop(token, None)

    def running(self, namespace: str) -> list[str]:
        state = self._namespaces.get(namespace)
        return list(state.running) if state else []
