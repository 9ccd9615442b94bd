"""Namespace limits as OpenWhisk has them: invocations per minute and concurrent
activations, per namespace, refused with 429 and a ``Retry-After``.

Pure logic with the time passed in, so the rules are tested without a clock. The
minute is a sliding window (the accepted start times of the last 60 s), not a fixed
calendar minute: a client cannot fit two minutes' worth into the seconds around a
minute boundary, and the retry time is exact — when the oldest start leaves the window.
An activation counts as concurrent from its start until :meth:`NamespaceLimiter.finish`
or its deadline, whichever comes first, so a result that never arrives cannot hold a
slot for ever.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

WINDOW_S = 60.0


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

    def start(self, namespace: str, token: str, now_s: float, deadline_s: float) -> Refusal | None:
        """Admit and count an activation, or say why not and when to retry."""
        state = self._namespaces.setdefault(namespace, _Namespace())
        while state.starts and state.starts[0] <= now_s - WINDOW_S:
            state.starts.popleft()
        for running_id, deadline in list(state.running.items()):
            if deadline <= now_s:
                del state.running[running_id]
        if len(state.starts) >= self.per_minute:
            retry = state.starts[0] + WINDOW_S - now_s
            return Refusal(
                f"namespace {namespace!r} is over its {self.per_minute} invocations per minute",
                max(1, math.ceil(retry)),
            )
        if len(state.running) >= self.concurrent:
            # Any running activation may end the next moment: the shortest retry.
            return Refusal(
                f"namespace {namespace!r} has {len(state.running)} activations running "
                f"(limit {self.concurrent})",
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
