"""Workload files: what a scheduler benchmark runs, validated before anything starts.

A workload names the transports and policies to compare, the cluster (invokers x slots),
the actions (how many, how long a run takes, their limits) and the load: ``users``
(closed loop: each user sends its next request when the previous one finished) or
``rate_per_s`` (open loop: requests are sent on a fixed schedule whatever happens, and
latency is measured from the *intended* send time, so a stalled system cannot hide its
stall by slowing the load down — "coordinated omission"). ``actions.count``, ``users``
and ``rate_per_s`` may be lists: every combination is one cell.

Example (TOML)::

    transports = ["memory", "redis"]
    policy = ["sharding", "acs"]
    invokers = 10
    slots = 20
    users = [100, 200]
    duration_s = 10
    warmup_s = 3

    [actions]
    count = [1, 100]
    run_ms = 2

    [settings.simulated]
    create_ms = [500, 1300]

Heterogeneous actions come as ``[[classes]]`` instead of ``[actions]``: each class has
its own count, run-time distribution, share of the traffic, memory, concurrency and limit
(a "mix" is several classes). An open-loop load may also come as ``[[phases]]``: steady,
a linear ramp, or on/off bursts, one after the other::

    [[classes]]
    name = "short"
    count = 15
    share = 0.5
    run_ms = {kind = "uniform", low_ms = 2, high_ms = 10}

    [[classes]]
    name = "long"
    count = 15
    share = 0.5
    run_ms = {kind = "lognormal", median_ms = 300, sigma = 0.4}

    [[phases]]
    shape = "ramp"
    duration_s = 10
    rate_per_s = 50
    to_rate_per_s = 400

Unknown keys are an error naming the key, as in the settings file.
"""

from __future__ import annotations

import itertools
import math
import random
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from broker_sched.errors import ConfigError

Policy = Literal["acs", "sharding"]


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list | tuple) else [value]


PositiveInts = Annotated[list[Annotated[int, Field(ge=1)]], BeforeValidator(_as_list)]
PositiveFloats = Annotated[list[Annotated[float, Field(gt=0)]], BeforeValidator(_as_list)]


def _default_policies() -> list[Policy]:
    return ["acs"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActionsSpec(_Strict):
    """The benchmark's actions: ``count`` of them, all alike.

    ``pick``: ``random`` — every request picks one of the actions uniformly at random
    (seeded); ``pinned`` — user ``i`` always invokes action ``i % count`` (open loop:
    requests go round-robin).
    """

    count: PositiveInts = Field(default_factory=lambda: [1], min_length=1)
    run_ms: float = Field(default=2.0, ge=0)
    max_containers: int = Field(default=50, ge=1)
    concurrency: int = Field(default=1, ge=1)
    memory_mb: int = Field(default=256, gt=0)
    pick: Literal["random", "pinned"] = "random"


class RunTime(_Strict):
    """A run-time distribution in milliseconds; a plain number means ``fixed``.

    ``lognormal`` is the shape measured serverless run times have (a long right tail):
    ``median_ms`` is its median, ``sigma`` the standard deviation of its logarithm.
    """

    kind: Literal["fixed", "uniform", "lognormal"] = "fixed"
    ms: float = Field(default=2.0, ge=0)
    low_ms: float = Field(default=0.0, ge=0)
    high_ms: float = Field(default=0.0, ge=0)
    median_ms: float = Field(default=0.0, ge=0)
    sigma: float = Field(default=0.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _number_is_fixed(cls, data: Any) -> Any:
        if isinstance(data, int | float) and not isinstance(data, bool):
            return {"kind": "fixed", "ms": data}
        return data

    @model_validator(mode="after")
    def _parameters_fit_the_kind(self) -> Self:
        if self.kind == "uniform" and self.high_ms < self.low_ms:
            raise ValueError("uniform run_ms needs low_ms <= high_ms")
        if self.kind == "lognormal" and self.median_ms <= 0:
            raise ValueError("lognormal run_ms needs median_ms > 0")
        return self

    def draw(self, rng: random.Random) -> float:
        if self.kind == "uniform":
            return rng.uniform(self.low_ms, self.high_ms)
        if self.kind == "lognormal":
            return rng.lognormvariate(math.log(self.median_ms), self.sigma)
        return self.ms

    @property
    def mean_ms(self) -> float:
        if self.kind == "uniform":
            return (self.low_ms + self.high_ms) / 2
        if self.kind == "lognormal":
            return self.median_ms * math.exp(self.sigma**2 / 2)
        return self.ms


class ActionClass(_Strict):
    """``count`` actions alike, sharing ``share`` of the traffic evenly between them."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]{0,15}$")]
    count: int = Field(default=1, ge=1)
    share: float = Field(default=1.0, gt=0)
    """Relative weight of the class's traffic; the weights of all classes are normalised."""
    run_ms: RunTime = RunTime()
    memory_mb: int = Field(default=256, gt=0)
    concurrency: int = Field(default=1, ge=1)
    max_containers: int = Field(default=50, ge=1)


class Phase(_Strict):
    """A stretch of open-loop load: ``steady`` at ``rate_per_s``; ``ramp`` from
    ``rate_per_s`` to ``to_rate_per_s``; ``onoff``: ``rate_per_s`` for ``on_s``, then
    nothing for ``off_s``, repeated."""

    shape: Literal["steady", "ramp", "onoff"] = "steady"
    duration_s: float = Field(gt=0)
    rate_per_s: float = Field(ge=0)
    to_rate_per_s: float | None = Field(default=None, ge=0)
    on_s: float = Field(default=1.0, gt=0)
    off_s: float = Field(default=1.0, ge=0)

    def rate_at(self, t_s: float) -> float:
        """The intended rate ``t_s`` seconds into the phase."""
        if self.shape == "ramp":
            end = self.rate_per_s if self.to_rate_per_s is None else self.to_rate_per_s
            return self.rate_per_s + (end - self.rate_per_s) * min(1.0, t_s / self.duration_s)
        if self.shape == "onoff":
            return self.rate_per_s if t_s % (self.on_s + self.off_s) < self.on_s else 0.0
        return self.rate_per_s


class Workload(_Strict):
    name: str = "workload"
    transports: Annotated[list[str], BeforeValidator(_as_list)] = Field(
        default_factory=lambda: ["memory"], min_length=1
    )
    policy: Annotated[list[Policy], BeforeValidator(_as_list)] = Field(
        default_factory=_default_policies, min_length=1
    )
    runtime: Literal["simulated", "process"] = "simulated"
    invokers: int = Field(default=10, ge=1)
    slots: int = Field(default=20, ge=1)
    actions: ActionsSpec = ActionsSpec()
    classes: list[ActionClass] = Field(default_factory=list)
    """Heterogeneous actions; when set, ``actions.count`` is not used."""
    phases: list[Phase] = Field(default_factory=list)
    """Open-loop load as phases; when set, ``rate_per_s`` is not needed."""
    users: PositiveInts | None = None
    rate_per_s: PositiveFloats | None = None
    duration_s: float = Field(default=10.0, gt=0)
    warmup_s: float = Field(default=3.0, ge=0)
    settle_s: float = Field(default=0.0, ge=0)
    """0: measure from ``warmup_s``. Otherwise the warm-up also lasts until no container
    was created or removed and consumption never paused for ``settle_s`` (a Kafka
    rebalance is such a pause), at most ``max_warmup_s``: for measuring the warm path."""
    max_warmup_s: float = Field(default=60.0, gt=0)
    interval_s: float = Field(default=1.0, gt=0)
    timeout_s: float = Field(default=30.0, gt=0)
    seed: int = 1
    settings: dict[str, Any] = Field(default_factory=dict)
    """Overrides merged into every cell's settings, e.g. ``{"kafka": {...}}``."""

    @model_validator(mode="after")
    def _one_kind_of_load(self) -> Self:
        if self.phases and (self.users is not None or self.rate_per_s is not None):
            raise ValueError("'phases' is the whole load: leave out 'users' and 'rate_per_s'")
        if not self.phases and (self.users is None) == (self.rate_per_s is None):
            raise ValueError(
                "set exactly one of 'users' (closed loop), 'rate_per_s' or 'phases' (open loop)"
            )
        names = [spec.name for spec in self.classes]
        if len(set(names)) != len(names):
            raise ValueError(f"class names must be unique: {names}")
        return self

    @property
    def action_counts(self) -> list[int]:
        """Actions per cell: the classes' total, or each of ``actions.count``."""
        return [sum(spec.count for spec in self.classes)] if self.classes else self.actions.count

    @property
    def phased_duration_s(self) -> float:
        return sum(phase.duration_s for phase in self.phases)

    def rate_at(self, t_s: float) -> float:
        """The phases' intended rate ``t_s`` seconds after the load started (0 after)."""
        for phase in self.phases:
            if t_s < phase.duration_s:
                return phase.rate_at(t_s)
            t_s -= phase.duration_s
        return 0.0

    def cells(self) -> list[Cell]:
        """Every combination, transport-major, then policy, actions and load."""
        loads: list[tuple[int | None, float | None]]
        if self.users is not None:
            loads = [(users, None) for users in self.users]
        elif self.rate_per_s is not None:
            loads = [(None, rate) for rate in self.rate_per_s]
        else:
            loads = [(None, None)]
        return [
            Cell(transport, policy, actions, users, rate)
            for transport, policy, actions, (users, rate) in itertools.product(
                self.transports, self.policy, self.action_counts, loads
            )
        ]


@dataclass(frozen=True, slots=True)
class Cell:
    transport: str
    policy: Policy
    actions: int
    users: int | None
    rate_per_s: float | None

    @property
    def label(self) -> str:
        if self.users is not None:
            load = f"{self.users} users"
        elif self.rate_per_s is not None:
            load = f"{self.rate_per_s:g}/s"
        else:
            load = "phases"
        return f"{self.transport} {self.policy} {self.actions} actions {load}"


def load_workload(path: Path | str) -> Workload:
    """Read and validate a workload file; raises :class:`ConfigError` naming each bad key."""
    file = Path(path)
    try:
        values = tomllib.loads(file.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"workload file not found: {file}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"workload file {file} is not valid TOML: {exc}") from exc
    values.setdefault("name", file.stem)
    return parse_workload(values)


def parse_workload(values: dict[str, Any]) -> Workload:
    try:
        return Workload.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'workload'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid workload: {problems}") from exc
