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

Unknown keys are an error naming the key, as in the settings file.
"""

from __future__ import annotations

import itertools
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
        if (self.users is None) == (self.rate_per_s is None):
            raise ValueError("set exactly one of 'users' (closed loop) or 'rate_per_s' (open loop)")
        return self

    def cells(self) -> list[Cell]:
        """Every combination, transport-major, then policy, actions and load."""
        loads: list[tuple[int | None, float | None]] = (
            [(users, None) for users in self.users]
            if self.users is not None
            else [(None, rate) for rate in self.rate_per_s or []]
        )
        return [
            Cell(transport, policy, actions, users, rate)
            for transport, policy, actions, (users, rate) in itertools.product(
                self.transports, self.policy, self.actions.count, loads
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
        load = f"{self.users} users" if self.users is not None else f"{self.rate_per_s:g}/s"
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
