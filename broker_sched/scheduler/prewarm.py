"""When to ask for a sequence's later steps' containers: pure timing over estimates.

A sequence's step k cannot start before every step ahead of it has run, so its
container need not exist earlier either: it is asked for at the moment the steps ahead
are expected to end, minus what its cold start may take and a lead. Too early wastes
the container-seconds it sits idle; too late leaves part of the cold start on the
chain's path. Where a run time is not measured yet there is no way to time what
follows, so every later step is asked for at once: the cold starts are saved, the
waste is higher.

The costs are not even: a cold start that takes longer than planned puts its overrun
on the chain's path, one that is quicker only idles. So a step's cold start is timed
by what it *may* take — a high quantile of its recent measurements — and the cold start
of the step the plan starts from, which only moves the later steps' need earlier when
it is quick, by what it may take at least (the low quantile). A cold start varies more
than the steps' own few samples show (on Docker, from 0.4 to 1.7 s for one image), so a
step with fewer than :data:`OWN_SAMPLES` measurements is judged by the samples of the
whole chain: its steps share a runtime, and one sample alone says nothing of spread.

The plan is made again each time the sequence reaches a step, from the moment it did:
the error of every estimate ahead of that step is gone then.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

OWN_SAMPLES = 3
"""A step's own cold starts alone time it from this many on."""


@dataclass(frozen=True, slots=True)
class StepEstimate:
    action: str
    run_s: float | None
    """Expected run of the step; None: not measured yet."""
    cold_starts_s: tuple[float, ...]
    """Recent measured create + init of the action's containers, oldest first."""
    warm: bool
    """A container of the action is up or being made."""


@dataclass(frozen=True, slots=True)
class PrewarmTiming:
    lead_s: float
    """Ask this much earlier still."""
    quantile: float
    """Of the measured cold starts, the share a step's ask allows for (0 < q ≤ 1)."""
    default_cold_start_s: float
    """A cold start where none is measured in the whole chain."""


@dataclass(frozen=True, slots=True)
class PrewarmAsk:
    step: int
    """Index in the sequence (≥ 1: the first step's container is the ordinary poke)."""
    action: str
    at_s: float
    """When to ask, in seconds after the sequence started."""
    needed_s: float | None
    """When the step is expected to start; None when an earlier run is unmeasured."""


def nearest_rank(samples: Sequence[float], quantile: float) -> float:
    """The smallest sample with at least ``quantile`` of them at or below it, so a high
    quantile of few samples is their largest and a low one their smallest."""
    if not samples:
        raise ValueError("no samples")
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(quantile * len(ordered)) - 1)]


def cold_start_range(
    own: Sequence[float], chain: Sequence[float], timing: PrewarmTiming
) -> tuple[float, float]:
    """What a step's cold start may take at least and at most: the low and high
    quantiles of its own samples, or of the chain's when it has fewer than
    :data:`OWN_SAMPLES` (the default when the chain has none)."""
    samples = own if len(own) >= OWN_SAMPLES else chain
    if not samples:
        cold_s = max(0.0, timing.default_cold_start_s)
        return cold_s, cold_s
    low_q = max(1 - timing.quantile, 1 / len(samples))
    low_s = max(0.0, nearest_rank(samples, low_q))
    return low_s, max(low_s, nearest_rank(samples, timing.quantile))


def prewarm_asks(
    steps: Sequence[StepEstimate],
    timing: PrewarmTiming,
    *,
    reached: int = 0,
    reached_at_s: float = 0.0,
) -> list[PrewarmAsk]:
    """One ask per step after ``reached`` with no container, in step order, planned
    from the moment (``reached_at_s`` after the sequence started) the sequence invoked
    step ``reached``.

    That step waits for its own cold start unless warm; each later step is expected to
    start when the one before it ends (its container having been warmed in time). An
    action that appears twice is asked for once, at its first step, and not at all when
    a step of it is reached or warm (that container serves it).
    """
    chain_samples = [cold for step in steps for cold in step.cold_starts_s]
    asks: list[PrewarmAsk] = []
    asked = {step.action for step in steps[: reached + 1]}
    expected_s: float | None = reached_at_s
    for index, step in enumerate(steps[reached:], start=reached):
        low_s, high_s = cold_start_range(step.cold_starts_s, chain_samples, timing)
        if index > reached and not step.warm and step.action not in asked:
            at_s = (
                reached_at_s
                if expected_s is None
                else max(reached_at_s, expected_s - high_s - timing.lead_s)
            )
            asks.append(PrewarmAsk(index, step.action, at_s, expected_s))
        asked.add(step.action)
        if expected_s is not None:
            if index == reached and not step.warm:
                expected_s += low_s
            expected_s = None if step.run_s is None else expected_s + max(0.0, step.run_s)
    return asks
