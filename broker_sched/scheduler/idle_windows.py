"""Keep-alive and pre-warm windows learned per action from its idle times.

Invocation patterns differ by orders of magnitude between actions: one fixed keep-alive
either keeps rarely called actions warm for nothing or cold-starts the ones called every
few minutes. The hybrid policy of "Serverless in the Wild" (USENIX ATC'20) learns two
windows per action from the histogram of its idle times — the time from the end of the
action's last run (nothing left in flight) to its next invocation:

- the **pre-warm window**: at most the histogram's head (``head_quantile``, less
  ``margin``). Calls this soon after the last are rare, so no container is kept for that
  long: the action scales to zero at once and a container is made again just before the
  window ends, ahead of the predicted next call;
- the **keep-alive window**: from there to at most the histogram's tail
  (``tail_quantile``, plus ``margin``); the container stays that long, then leaves.

Within those bounds (the paper's windows) the window is trimmed to the cheapest one:
the least chance of a cold start plus idle container-seconds held per idle gap, priced
at ``cold_start_worth_s`` seconds a cold start. An action called every few hours keeps
nothing; a timer is pre-warmed just before its period; a busy action keeps its
container as long as its calls pay for it. That is what no fixed keep-alive can do:
spend memory where it saves cold starts.

Two fallbacks, as in the paper:

- too few idle times (``min_samples``) to trust a histogram: the fixed keep-alive;
- most idle times beyond the histogram's range (``max_beyond_share``): a forecast of
  the next idle time, here the running mean of the out-of-range ones (the paper fits an
  ARIMA model; a mean needs one number per action): pre-warm ``margin`` of it early and
  keep twice that.

The histogram's bins are geometric (``first_bin_s``, then each ``bin_growth`` times
wider, up to ``range_s``), so a seconds-long and an hours-long pattern are told apart
with the same relative precision in a few dozen counters per action: memory is bounded
by the settings, not by the calls. Everything here is pure; the invoker and the
simulator keep one :class:`IdleHistogram` per action and ask :func:`learned_windows`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from broker_sched.config import KeepAliveSettings

BEYOND_MEAN_WEIGHT = 0.3
"""Weight of the newest out-of-range idle time in their running mean."""


@dataclass(frozen=True, slots=True)
class BinShape:
    """The geometric bins of an idle-time histogram."""

    first_bin_s: float
    growth: float
    bins: int
    """Bin 0 is ``[0, first_bin_s)``; bin ``k`` ends at ``first_bin_s * growth**k``."""

    @staticmethod
    def of(settings: KeepAliveSettings) -> BinShape:
        ratio = max(settings.range_s / settings.first_bin_s, 1.0)
        bins = math.ceil(math.log(ratio) / math.log(settings.bin_growth) - 1e-9) + 1
        return BinShape(settings.first_bin_s, settings.bin_growth, bins)

    @property
    def range_s(self) -> float:
        return self.upper_s(self.bins - 1)

    def index(self, idle_s: float) -> int | None:
        """The bin of ``idle_s``; None beyond the range."""
        if idle_s < self.first_bin_s:
            return 0
        k = math.floor(math.log(idle_s / self.first_bin_s) / math.log(self.growth)) + 1
        # floating point may land an edge value one bin off; the edges decide
        if k > 0 and idle_s < self.lower_s(k):
            k -= 1
        elif idle_s >= self.upper_s(k):
            k += 1
        return k if k < self.bins else None

    def lower_s(self, k: int) -> float:
        return 0.0 if k == 0 else self.first_bin_s * self.growth ** (k - 1)

    def upper_s(self, k: int) -> float:
        return self.first_bin_s * self.growth**k


class IdleHistogram:
    """One action's idle times: a count per bin, the out-of-range ones' count and mean."""

    __slots__ = ("beyond", "beyond_mean_s", "counts", "shape")

    def __init__(self, shape: BinShape) -> None:
        self.shape = shape
        self.counts = [0] * shape.bins
        self.beyond = 0
        self.beyond_mean_s = 0.0

    @property
    def samples(self) -> int:
        return sum(self.counts) + self.beyond

    def add(self, idle_s: float) -> None:
        k = self.shape.index(max(0.0, idle_s))
        if k is not None:
            self.counts[k] += 1
            return
        self.beyond += 1
        weight = 1.0 if self.beyond == 1 else BEYOND_MEAN_WEIGHT
        self.beyond_mean_s += weight * (idle_s - self.beyond_mean_s)


@dataclass(frozen=True, slots=True)
class Windows:
    """What an idle action keeps: nothing for ``prewarm_s`` after it went idle, then a
    container for ``keep_alive_s``; ``reason`` says which rule chose them."""

    prewarm_s: float
    keep_alive_s: float
    reason: str

    @property
    def until_s(self) -> float:
        """Idle for this long, the action keeps no container any more."""
        return self.prewarm_s + self.keep_alive_s


def fixed_windows(keep_alive_s: float, reason: str = "fixed keep-alive") -> Windows:
    return Windows(0.0, keep_alive_s, reason)


def learned_windows(
    histogram: IdleHistogram, settings: KeepAliveSettings, fixed_keep_alive_s: float
) -> Windows:
    """The action's windows from its idle-time histogram (module docstring)."""
    total = histogram.samples
    if total < settings.min_samples:
        return fixed_windows(
            fixed_keep_alive_s, f"{total} idle times < {settings.min_samples}: fixed keep-alive"
        )
    margin = settings.margin
    if histogram.beyond > settings.max_beyond_share * total:
        forecast_s = histogram.beyond_mean_s
        return Windows(
            forecast_s * (1 - margin),
            forecast_s * 2 * margin,
            f"{histogram.beyond} of {total} idle times beyond "
            f"{histogram.shape.range_s:.0f} s: pre-warm before their mean {forecast_s:.0f} s",
        )
    in_range = total - histogram.beyond
    shape = histogram.shape
    head = _quantile_bin(histogram.counts, settings.head_quantile * in_range)
    tail = _quantile_bin(histogram.counts, settings.tail_quantile * in_range)
    first, last, cost = _cheapest_window(histogram, head, tail, settings.cold_start_worth_s)
    bounds = f"head {shape.lower_s(head):.1f} s, tail {shape.upper_s(tail):.1f} s"
    if first is None:
        return Windows(
            0.0,
            0.0,
            f"idle-time histogram of {in_range} ({bounds}): no window pays for its memory "
            f"(worth {settings.cold_start_worth_s:g} s a cold start): scale to zero",
        )
    prewarm_s = shape.lower_s(first) * (1 - margin)
    until_s = shape.upper_s(last) * (1 + margin)
    return Windows(
        prewarm_s,
        until_s - prewarm_s,
        f"idle-time histogram of {in_range} ({bounds}): window "
        f"{shape.lower_s(first):.1f}-{shape.upper_s(last):.1f} s, {cost:.2f} per idle gap",
    )


def _cheapest_window(
    histogram: IdleHistogram, head: int, tail: int, worth_s: float
) -> tuple[int | None, int, float]:
    """The window of bins ``first..last`` (``first <= head``, ``last <= tail``) with the
    least expected cost per idle gap: the chance of a cold start (the call comes before
    the window or after it) plus the idle seconds it holds a container, ÷ ``worth_s``.
    A call is taken at its bin's middle; ``first`` None: no window beats none (cost 1).

    The paper's window (head to tail) is the widest one; this trims bins whose calls do
    not pay for their memory — the tail of an action called every few hours, or all of
    a rare one — which no fixed keep-alive can do per action.
    """
    shape = histogram.shape
    counts = histogram.counts
    total = histogram.samples
    lowers = [shape.lower_s(k) for k in range(tail + 1)]
    uppers = [shape.upper_s(k) for k in range(tail + 1)]
    middles = [(low + high) / 2 for low, high in zip(lowers, uppers, strict=True)]
    best: tuple[int | None, int, float] = (None, 0, 1.0)
    before = 0
    for first in range(head + 1):
        start_s = lowers[first]
        after = total - before
        held_s = 0.0
        for last in range(first, tail + 1):
            count = counts[last]
            held_s += count * (middles[last] - start_s)
            after -= count
            cost = (before + after + (held_s + after * (uppers[last] - start_s)) / worth_s) / total
            if cost < best[2]:
                best = (first, last, cost)
        before += counts[first]
    return best


def _quantile_bin(counts: list[int], rank: float) -> int:
    """The first bin whose running count reaches ``rank`` (at least one sample)."""
    seen = 0
    rank = max(rank, 1.0)
    for k, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return k
    return len(counts) - 1


def relearn_due(samples: int, learned_at: int) -> bool:
    """Whether windows learned at ``learned_at`` samples are worth learning again: at
    every sample while few, then each time the histogram grew by a tenth (a busy action
    adds thousands of idle times; each moves its windows less)."""
    return samples - learned_at >= max(1, learned_at // 10)


def keeps_container(windows: Windows, action_idle_s: float) -> bool:
    """Whether an action idle for ``action_idle_s`` should hold a warm container now."""
    return windows.prewarm_s <= action_idle_s < windows.until_s


def prewarm_due_s(windows: Windows) -> float | None:
    """Idle for this long, the action's container is made again; None: never left."""
    return windows.prewarm_s if windows.prewarm_s > 0 else None
