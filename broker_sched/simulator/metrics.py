"""What one simulated run measured, and the typed report it ends in.

Memory is integrated over virtual time, not sampled: every change of the memory held
by containers (all of them, and the idle ones alone) closes an interval, so "wasted
container-seconds" is exact however short the idle spells are. Waits are kept as one
float per started run (an ``array``, 8 bytes each) for exact percentiles and the CDF.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass

CDF_POINTS = 200
"""Points kept of the wait CDF in a report: enough for a plot, small in JSON."""


@dataclass(frozen=True, slots=True)
class TickDecision:
    """One action's decision at one ``acs`` tick (recorded on request, for comparisons)."""

    t_s: float
    action: str
    rule: str
    create: int
    remove: int
    needed: int
    desired: int


@dataclass(frozen=True, slots=True)
class PolicyReport:
    policy: str
    activations: int
    """Invocations that arrived (rejected ones included)."""
    completed: int
    rejected: int
    """Turned away at once (throttled, or no capacity could be made)."""
    timed_out: int
    """Waited past the invocation timeout before a run started."""
    cold_starts: int
    resumed: int
    """Runs that first had to resume a paused container."""
    cold_start_share: float
    """Cold starts per started run."""
    wait_p50_ms: float
    wait_p99_ms: float
    wait_max_ms: float
    """Arrival to the start of the run: queueing, create or resume included."""
    wasted_gb_s: float
    """Memory of idle (and paused) containers x the time they sat idle."""
    container_gb_s: float
    """Memory of all containers x their lifetime (being created included)."""
    containers_created: int
    evictions: int
    """Idle containers removed to make room for another action's."""
    scaled_in: int
    """Containers told to leave by a central scale-in decision (``acs``)."""
    peak_containers: int
    decide_calls: int
    """Calls of the real ``decide()`` (``acs``; 0 for the others)."""
    wall_s: float
    """Real seconds the run took to simulate."""
    containers: tuple[tuple[float, int], ...]
    """``(virtual time s, containers)``, sampled at a fixed step."""
    wait_cdf: tuple[tuple[float, float], ...]
    """``(wait ms, share of runs waiting at most that)``."""
    decisions: tuple[TickDecision, ...] = ()
    """Every decision of every tick, when the run was asked to record them (``acs``)."""


class Meter:
    """Counts and integrals of one run; :meth:`report` freezes them."""

    def __init__(self, *, record_decisions: bool = False) -> None:
        self.record_decisions = record_decisions
        self.decisions: list[TickDecision] = []
        self.activations = 0
        self.completed = 0
        self.rejected = 0
        self.timed_out = 0
        self.cold_starts = 0
        self.resumed = 0
        self.containers_created = 0
        self.evictions = 0
        self.scaled_in = 0
        self.decide_calls = 0
        self.containers = 0
        self.peak_containers = 0
        self.waits_s = array("d")
        self.series: list[tuple[float, int]] = []
        self._held_mb = 0
        self._idle_mb = 0
        self._held_mb_s = 0.0
        self._idle_mb_s = 0.0
        self._since_s = 0.0

    def _advance(self, now_s: float) -> None:
        elapsed_s = now_s - self._since_s
        if elapsed_s > 0:
            self._held_mb_s += self._held_mb * elapsed_s
            self._idle_mb_s += self._idle_mb * elapsed_s
            self._since_s = now_s

    def container_added(self, now_s: float, memory_mb: int) -> None:
        self._advance(now_s)
        self._held_mb += memory_mb
        self.containers += 1
        self.containers_created += 1
        self.peak_containers = max(self.peak_containers, self.containers)

    def container_removed(self, now_s: float, memory_mb: int, *, idle: bool) -> None:
        self._advance(now_s)
        self._held_mb -= memory_mb
        if idle:
            self._idle_mb -= memory_mb
        self.containers -= 1

    def idle(self, now_s: float, memory_mb: int, *, starts: bool) -> None:
        """A ready container became idle (``starts``) or busy again."""
        self._advance(now_s)
        self._idle_mb += memory_mb if starts else -memory_mb

    def started(self, wait_s: float, *, cold: bool, resumed: bool) -> None:
        self.waits_s.append(wait_s)
        self.cold_starts += cold
        self.resumed += resumed

    def sample(self, now_s: float) -> None:
        self.series.append((now_s, self.containers))

    def report(self, policy: str, end_s: float, wall_s: float) -> PolicyReport:
        self._advance(end_s)
        waits = sorted(self.waits_s)
        runs = len(waits)
        return PolicyReport(
            policy=policy,
            activations=self.activations,
            completed=self.completed,
            rejected=self.rejected,
            timed_out=self.timed_out,
            cold_starts=self.cold_starts,
            resumed=self.resumed,
            cold_start_share=self.cold_starts / runs if runs else 0.0,
            wait_p50_ms=percentile(waits, 0.50) * 1000,
            wait_p99_ms=percentile(waits, 0.99) * 1000,
            wait_max_ms=(waits[-1] if waits else 0.0) * 1000,
            wasted_gb_s=self._idle_mb_s / 1024,
            container_gb_s=self._held_mb_s / 1024,
            containers_created=self.containers_created,
            evictions=self.evictions,
            scaled_in=self.scaled_in,
            peak_containers=self.peak_containers,
            decide_calls=self.decide_calls,
            wall_s=wall_s,
            containers=tuple(self.series),
            wait_cdf=cdf(waits),
            decisions=tuple(self.decisions),
        )


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile of an already sorted list (0 when empty)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def cdf(ordered: list[float]) -> tuple[tuple[float, float], ...]:
    """At most :data:`CDF_POINTS` evenly spaced points of the sorted waits, in ms."""
    n = len(ordered)
    if n == 0:
        return ()
    step = max(1, n // CDF_POINTS)
    indexes = [*range(step - 1, n, step)]
    if indexes[-1] != n - 1:
        indexes.append(n - 1)
    return tuple((ordered[i] * 1000, (i + 1) / n) for i in indexes)
