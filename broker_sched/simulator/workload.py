"""Workload files as simulator input: the same ``[[classes]]``, phases and load as a bench.

A bench cell and a simulated run of one workload should differ only by the clock, so
the settings are derived the way a cell derives them (the workload's slots, timeout
and seed, then its ``settings`` overrides), and actions alike are named as a cell
names them (``guest/a000``, …); a class's actions are ``guest/<class>000``, ….
Lists in the file (``users``, ``rate_per_s``, ``actions.count``) are combinations for
the bench; the simulator runs the first of each.

Open-loop arrivals are "even" by default — invocation ``n`` is due when the integral of
the rate reaches ``n``, the bench's own schedule — or "poisson" (a Poisson process with
the same rate), both drawn in steps of :data:`STEP_S`.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from broker_sched.bench.settings import derive
from broker_sched.bench.workload import Workload
from broker_sched.config import Settings
from broker_sched.simulator.model import ClosedLoop, Cluster, Scenario, SimAction

Spread = Literal["even", "poisson"]

STEP_S = 0.01
"""Step of the rate integral: arrival times are exact for a rate constant within a step."""

WINDOW_S = 1.0
"""Virtual seconds of arrivals drawn at a time."""


@dataclass(frozen=True, slots=True)
class RateArrivals:
    """Open-loop arrivals at ``rate_at(t)`` per second, each for an action picked by weight."""

    rate_at: Callable[[float], float]
    duration_s: float
    weights: tuple[float, ...]
    spread: Spread = "even"
    round_robin: bool = False
    """Actions in turn instead of by weight (a workload's ``pick = "pinned"``)."""
    window_s: float = WINDOW_S

    def windows(self, rng: random.Random) -> Iterator[list[tuple[float, int]]]:
        cumulative = list(itertools.accumulate(self.weights))
        credit = 0.0
        due = self._threshold(rng)
        sent = 0
        steps = round(self.window_s / STEP_S)
        for window in range(math.ceil(self.duration_s / self.window_s)):
            arrivals: list[tuple[float, int]] = []
            for step in range(steps):
                start_s = window * self.window_s + step * STEP_S
                if start_s >= self.duration_s:
                    break
                rate = max(0.0, self.rate_at(start_s + STEP_S / 2))
                before = credit
                credit += rate * STEP_S
                while credit >= due:
                    at_s = start_s + (due - before) / rate
                    index = sent % len(self.weights) if self.round_robin else _pick(cumulative, rng)
                    arrivals.append((at_s, index))
                    sent += 1
                    before, due = due, due + self._threshold(rng)
            yield arrivals

    def _threshold(self, rng: random.Random) -> float:
        return rng.expovariate(1.0) if self.spread == "poisson" else 1.0


@dataclass(frozen=True, slots=True)
class ListedArrivals:
    """Arrivals at listed times: ``(time_s, action index)``, for tests and replays."""

    arrivals: tuple[tuple[float, int], ...]
    duration_s: float
    window_s: float = WINDOW_S

    def windows(self, rng: random.Random) -> Iterator[list[tuple[float, int]]]:
        ordered = sorted(self.arrivals)
        for window in range(math.ceil(self.duration_s / self.window_s)):
            start_s, end_s = window * self.window_s, (window + 1) * self.window_s
            yield [(t, i) for t, i in ordered if start_s <= t < end_s]


def _pick(cumulative: list[float], rng: random.Random) -> int:
    """An action index, by weight (``cumulative``: running totals of the weights)."""
    index = bisect.bisect_right(cumulative, rng.random() * cumulative[-1])
    return min(index, len(cumulative) - 1)


def workload_settings(workload: Workload, base: Settings) -> Settings:
    """``base`` with what a bench cell of ``workload`` overrides."""
    cell = {
        "invocation_timeout_s": workload.timeout_s,
        "invoker": {"slots": workload.slots},
        "simulated": {"seed": workload.seed},
    }
    return derive(derive(base, cell), workload.settings)


def workload_actions(workload: Workload) -> tuple[tuple[SimAction, ...], tuple[float, ...]]:
    """The actions and each one's share of the calls."""
    if not workload.classes:
        alike = workload.actions
        count = alike.count[0]
        runtime = FixedRunTime(alike.run_ms)
        actions = tuple(
            SimAction(
                f"guest/a{i:03d}", runtime, alike.memory_mb, alike.concurrency, alike.max_containers
            )
            for i in range(count)
        )
        return actions, (1.0,) * count
    total_share = sum(spec.share for spec in workload.classes)
    actions_list: list[SimAction] = []
    weights: list[float] = []
    for spec in workload.classes:
        for i in range(spec.count):
            actions_list.append(
                SimAction(
                    f"guest/{spec.name}{i:03d}",
                    spec.run_ms,
                    spec.memory_mb,
                    spec.concurrency,
                    spec.max_containers,
                )
            )
            weights.append(spec.share / total_share / spec.count)
    return tuple(actions_list), tuple(weights)


@dataclass(frozen=True, slots=True)
class FixedRunTime:
    """Every run takes ``ms`` (a workload's plain ``[actions] run_ms``)."""

    ms: float

    def draw(self, rng: random.Random) -> float:
        return self.ms


def from_workload(workload: Workload, settings: Settings, *, spread: Spread = "even") -> Scenario:
    """The scenario of ``workload``'s first cell; ``settings`` as :func:`workload_settings`."""
    actions, weights = workload_actions(workload)
    duration_s = workload.warmup_s + workload.duration_s
    load: RateArrivals | ClosedLoop
    if workload.phases:
        load = RateArrivals(workload.rate_at, workload.phased_duration_s, weights, spread)
    elif workload.rate_per_s is not None:
        rate = workload.rate_per_s[0]
        load = RateArrivals(
            lambda _t: rate,
            duration_s,
            weights,
            spread,
            round_robin=not workload.classes and workload.actions.pick == "pinned",
        )
    else:
        assert workload.users is not None
        pinned = not workload.classes and workload.actions.pick == "pinned"
        load = ClosedLoop(workload.users[0], duration_s, weights, pinned)
    return Scenario(
        name=workload.name,
        actions=actions,
        cluster=Cluster(workload.invokers, workload.slots, settings.invoker.memory_mb),
        load=load,
        timeout_s=settings.invocation_timeout_s,
        seed=workload.seed,
    )
