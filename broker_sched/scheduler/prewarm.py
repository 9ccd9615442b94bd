"""When to ask for a sequence's later steps' containers: pure timing over estimates.

A sequence's step k cannot start before every step ahead of it has run, so its
container need not exist earlier either: it is asked for at the moment the steps ahead
are expected to end, minus its own cold start and a lead. Too early wastes the
container-seconds it sits idle; too late leaves part of the cold start on the chain's
path. Where a run time is not measured yet there is no way to time what follows, so
every later step is asked for at once: the cold starts are saved, the waste is higher.

Estimates per step: ``run_s`` (the action's measured service time), ``cold_start_s``
(its measured create + init, else the default), and whether a container of it is up or
on its way (``warm``: nothing to ask for, and no cold start ahead of the next step).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StepEstimate:
    action: str
    run_s: float | None
    """Expected run of the step; None: not measured yet."""
    cold_start_s: float | None
    """Expected create + init of a container for it; None: not measured yet."""
    warm: bool
    """A container of the action is up or being made."""


@dataclass(frozen=True, slots=True)
class PrewarmAsk:
    step: int
    """Index in the sequence (≥ 1: the first step's container is the ordinary poke)."""
    action: str
    at_s: float
    """When to ask, in seconds after the sequence started (0: at once)."""
    needed_s: float | None
    """When the step is expected to start; None when an earlier run is unmeasured."""


def prewarm_asks(
    steps: Sequence[StepEstimate], *, lead_s: float, default_cold_start_s: float
) -> list[PrewarmAsk]:
    """One ask per later step with no container, in step order.

    Step 0 waits for its own cold start unless warm; each later step is expected to
    start when the one before it ends (its container having been warmed in time). An
    action that appears twice is asked for once, at its first step (the first step's
    action never: its first activation brings its container).
    """
    asks: list[PrewarmAsk] = []
    asked = {steps[0].action} if steps else set()
    expected_s: float | None = 0.0
    for index, step in enumerate(steps):
        cold_s = default_cold_start_s if step.cold_start_s is None else step.cold_start_s
        cold_s = max(0.0, cold_s)
        if index > 0 and not step.warm and step.action not in asked:
            at_s = 0.0 if expected_s is None else max(0.0, expected_s - cold_s - lead_s)
            asks.append(PrewarmAsk(index, step.action, at_s, expected_s))
            asked.add(step.action)
        if expected_s is not None:
            if index == 0 and not step.warm:
                expected_s += cold_s
            expected_s = None if step.run_s is None else expected_s + max(0.0, step.run_s)
    return asks
