"""Measurements the backlog monitor feeds the decision: arrival rate and mean durations.

Both are plain classes with the time passed in, so they are deterministic under test
and never read a clock of their own. What can go wrong is memory and poison: an arrival
counter that kept one entry per activation would grow with the load (20,000 activations
per second is a normal benchmark), and a single NaN sample would turn every later mean
into NaN. The counter therefore keeps a fixed number of buckets per window, and the
average refuses samples that are not finite numbers.
"""

from __future__ import annotations

import math
from collections import deque


class ArrivalRate:
    """Events per second over the last ``window_s``, counted in ``buckets`` time buckets.

    An event at time ``t`` falls in bucket ``floor(t / (window_s / buckets))``; the rate at
    ``now_s`` counts the ``buckets`` buckets up to and including the one ``now_s`` is in.
    An event therefore leaves the window between ``window_s - window_s / buckets`` and
    ``window_s`` after it happened: with the defaults (1 s, 100 buckets) the window is
    exact to 10 ms, and memory stays at most ``buckets`` entries whatever the load.

    Time is expected not to go backwards (use ``time.monotonic()``); an event recorded
    earlier than the last one is counted in the last one's bucket rather than lost.
    """

    def __init__(self, window_s: float, buckets: int = 100) -> None:
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be a positive number, got {window_s!r}")
        if buckets < 1:
            raise ValueError(f"buckets must be at least 1, got {buckets!r}")
        self.window_s = window_s
        self.buckets = buckets
        self._bucket_s = window_s / buckets
        self._counts: deque[list[int]] = deque()
        self._total = 0

    def record(self, now_s: float, n: int = 1) -> None:
        """Count ``n`` events at ``now_s``."""
        if n < 0:
            raise ValueError(f"cannot record a negative number of events: {n}")
        if n == 0:
            return
        index = self._index(now_s)
        if self._counts and index <= self._counts[-1][0]:
            self._counts[-1][1] += n
        else:
            self._counts.append([index, n])
        self._total += n
        self._forget_before(index)

    def rate_per_s(self, now_s: float) -> float:
        """Events per second over the window that ends at ``now_s``."""
        self._forget_before(self._index(now_s))
        return self._total / self.window_s

    def _index(self, now_s: float) -> int:
        return math.floor(now_s / self._bucket_s)

    def _forget_before(self, index: int) -> None:
        oldest_kept = index - self.buckets + 1
        while self._counts and self._counts[0][0] < oldest_kept:
            self._total -= self._counts.popleft()[1]


class MovingAverage:
    """The mean of the last ``size`` samples; ``None`` until the first sample.

    ``None`` rather than 0 on purpose: the decision must tell "not measured yet" (use the
    target wait, docs/scaling.md rule 7) from "measured as very fast".
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size!r}")
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, x: float) -> None:
        if not math.isfinite(x):
            raise ValueError(f"sample must be a finite number, got {x!r}")
        self._samples.append(x)

    @property
    def value(self) -> float | None:
        if not self._samples:
            return None
        return math.fsum(self._samples) / len(self._samples)

    @property
    def samples(self) -> tuple[float, ...]:
        """The samples the mean is of, oldest first."""
        return tuple(self._samples)

    def __len__(self) -> int:
        return len(self._samples)


class WindowMax:
    """The largest sample of the last ``window_s``: the demand central scale-in keeps.

    A monotonic deque (each sample drops the smaller ones before it), so memory stays
    at most one entry per tick of the window and each sample costs O(1) amortised.
    :meth:`value` is None until samples span the whole window: an action watched for
    less than that has not shown what it needs yet.
    """

    def __init__(self, window_s: float) -> None:
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be a positive number, got {window_s!r}")
        self.window_s = window_s
        self._first_s: float | None = None
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now_s: float, value: int) -> None:
        if self._first_s is None:
            self._first_s = now_s
        while self._samples and self._samples[-1][1] <= value:
            self._samples.pop()
        self._samples.append((now_s, value))
        self._forget_before(now_s - self.window_s)

    def value(self, now_s: float) -> int | None:
        if self._first_s is None or now_s - self._first_s < self.window_s:
            return None
        self._forget_before(now_s - self.window_s)
        return self._samples[0][1] if self._samples else 0

    def _forget_before(self, oldest_s: float) -> None:
        while self._samples and self._samples[0][0] < oldest_s:
            self._samples.popleft()
