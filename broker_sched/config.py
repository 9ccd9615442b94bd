"""Settings: defaults, then a TOML file, then ``BROKER_SCHED_*`` environment variables.

Unknown keys are an error naming the key (a typo in a scaling knob should not silently
run with the default). Every duration and size carries its unit in its name.

The core's sections live here. Each backend owns its section (``[kafka]``, ``[redis]``,
…): a :class:`~transports.base.BackendSettings` model in its own module, registered
with its transport class (``settings_section``, ``settings_model``). :data:`Settings`
is the core's model extended with the section of every transport found through the
entry points, so a third-party transport brings its settings with it and they are
validated, documented and read from the environment like the built-in ones; the
models are plain data, so validating a config still imports no broker client.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from broker_sched.errors import ConfigError
from broker_sched.model import Action
from transports.base import BackendSettings
from transports.registry import settings_sections

Section = TypeVar("Section", bound=BackendSettings)

_config_file: ContextVar[Path | None] = ContextVar("broker_sched_config_file", default=None)
ENV_PREFIX = "BROKER_SCHED_"
NON_SETTINGS_ENV = ("REQUIRE_BROKERS", "STATE_DIR", "TEST_", "UP_TIMEOUT", "ENGINE_TIMEOUT")
"""Variables with the prefix that belong to the test harness and the broker scripts."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SchedulerSettings(_Section):
    check_interval_s: float = Field(default=0.1, gt=0)
    target_wait_s: float = Field(default=0.1, gt=0)
    target_utilization: float = Field(default=0.8, gt=0, le=1)
    max_wait_s: float = Field(default=10.0, gt=0)
    throttle_release_ratio: float = Field(default=0.9, gt=0, lt=1)
    auto_partitions: bool = False
    resize_cooldown_s: float = Field(default=30.0, ge=0)
    run_time_samples: int = Field(default=10, ge=1)
    arrival_window_s: float = Field(default=1.0, gt=0)
    heartbeat_expiry_beats: int = Field(default=3, ge=1)
    create_timeout_s: float = Field(default=30.0, gt=0)
    stable_window_s: float = Field(
        default=10.0, gt=0, description="central scale-in keeps the most demand of this window"
    )
    scale_in_interval_s: float = Field(
        default=2.0, ge=0, description="at most one central scale-in per action this often"
    )
    scale_down_rate: float = Field(
        default=2.0, gt=1, description="one scale-in keeps at least running / this"
    )
    evict_min_idle_s: float = Field(
        default=0.5, ge=0, description="a full cluster evicts only containers idle this long"
    )
    ownership_shards: int = Field(
        default=32,
        ge=1,
        le=4096,
        description="actions hash into this many shards, each owned by one controller "
        "through a lease on the broker (the same in every controller of a cluster)",
    )
    lease_ttl_s: float = Field(
        default=2.0,
        gt=0,
        description="a dead controller's shards pass to the others within this plus a "
        "quarter of it (renewals every quarter)",
    )


class InvokerSettings(_Section):
    id: str = ""
    slots: int = Field(default=20, ge=1)
    memory_mb: int = Field(default=8192, gt=0)
    heartbeat_interval_s: float = Field(default=1.0, gt=0)
    keep_alive_s: float = Field(default=10.0, gt=0)
    pause_grace_s: float = Field(default=1.0, ge=0)
    fetch_timeout_s: float = Field(default=0.5, gt=0)
    record_ttl_s: float = Field(
        default=3600.0,
        gt=0,
        description="how long activation records stay in the transport for any controller "
        "(written by the invoker that answers; formerly api.record_ttl_s, still read)",
    )


class SimulatedRuntimeSettings(_Section):
    """Cost ranges (uniform) for the simulated runtime; defaults are Docker-like figures."""

    seed: int = 42
    create_ms: tuple[float, float] = (500.0, 1300.0)
    init_ms: tuple[float, float] = (0.0, 0.0)
    pause_ms: tuple[float, float] = (10.0, 25.0)
    resume_ms: tuple[float, float] = (50.0, 400.0)
    remove_ms: tuple[float, float] = (45.0, 100.0)
    run_ms: tuple[float, float] = (2.0, 2.0)
    from_docker_ops: Path | None = Field(
        default=None,
        description="a docker-ops.json written by `broker-sched bench docker-ops`: "
        "its measured create, pause, resume and remove ranges",
    )

    @model_validator(mode="before")
    @classmethod
    def _measured_costs(cls, data: Any) -> Any:
        """This machine's measured Docker costs replace the defaults; a range also set
        by hand beside them is an error, since one of the two would be ignored."""
        if not isinstance(data, Mapping) or not data.get("from_docker_ops"):
            return data
        path = Path(data["from_docker_ops"])
        try:
            measured = json.loads(path.read_text())["simulated"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"from_docker_ops: {path} is not a docker-ops.json from "
                f"`broker-sched bench docker-ops` ({type(exc).__name__}: {exc})"
            ) from exc
        costs = {key: value for key, value in measured.items() if key.endswith("_ms")}
        if clash := sorted(set(costs) & set(data)):
            raise ValueError(f"{', '.join(clash)}: set here and in from_docker_ops {path}")
        return {**data, **costs}


class DockerSettings(_Section):
    """The `docker` runtime: one Docker container per function container."""

    image: str = "broker-sched/action-python:latest"
    max_concurrent_ops: int = Field(default=8, ge=1)
    memory_limit: bool = True
    code_paths: list[str] = Field(
        default_factory=list,
        description="host dirs mounted read-only on PYTHONPATH; default: broker_sched's own",
    )


class PrewarmPoolSettings(_Section):
    """One pool of stem cells (prewarmed containers) for a runtime kind and memory size."""

    kind: str = Field(default="python", min_length=1, description="the actions' `kind`")
    memory_mb: int = Field(default=256, gt=0)
    initial_count: int = Field(default=2, ge=0, description="stem cells made at start")
    min_count: int = Field(default=0, ge=0, description="reactive: never fewer than this")
    max_count: int = Field(default=4, ge=0, description="reactive: never more than this")
    ttl_s: float = Field(
        default=300.0, gt=0, description="a stem cell unused this long is removed (and replaced)"
    )
    reactive: bool = Field(
        default=False,
        description="size the pool from its misses in the last window (else: initial_count)",
    )
    threshold: int = Field(default=1, ge=1, description="reactive: misses per increment")
    increment: int = Field(default=1, ge=1, description="reactive: stem cells per threshold")

    @model_validator(mode="after")
    def _ordered(self) -> PrewarmPoolSettings:
        if not self.min_count <= self.max_count:
            raise ValueError(f"min_count {self.min_count} > max_count {self.max_count}")
        if self.reactive and not self.min_count <= self.initial_count <= self.max_count:
            raise ValueError(
                f"initial_count {self.initial_count} is outside min..max "
                f"{self.min_count}..{self.max_count}"
            )
        return self

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.memory_mb}"


class PrewarmSettings(_Section):
    """Stem-cell pools per invoker (none by default: every start that is not warm is cold)."""

    pools: list[PrewarmPoolSettings] = Field(default_factory=list)
    window_s: float = Field(
        default=10.0, gt=0, description="how often reactive pools are resized from their misses"
    )
    check_interval_s: float = Field(
        default=1.0, gt=0, description="how often pools are refilled and stale cells removed"
    )

    @model_validator(mode="after")
    def _one_pool_per_key(self) -> PrewarmSettings:
        keys = [pool.key for pool in self.pools]
        if twice := sorted({key for key in keys if keys.count(key) > 1}):
            raise ValueError(f"more than one pool for {', '.join(twice)}")
        return self


class SequenceSettings(_Section):
    """Sequence actions and the pre-warming of their later steps."""

    prewarm: bool = Field(
        default=True,
        description="ask for a later step's container when the sequence starts, timed to be "
        "ready when the steps before it end",
    )
    prewarm_lead_s: float = Field(
        default=0.25, ge=0, description="ask this much earlier than the estimate says"
    )
    prewarm_cold_start_quantile: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="a later step is asked for as if its cold start took this quantile of "
        "its recent ones (of the whole chain's, below three of its own)",
    )
    prewarm_ttl_s: float = Field(
        default=2.0,
        gt=0,
        description="a container warmed for a step the chain never reached is released after",
    )


class KeepAliveSettings(_Section):
    """How long an idle action keeps a container: fixed, or learned per action (docs/scaling.md)."""

    policy: Literal["fixed", "learned"] = Field(
        default="fixed",
        description="fixed: every container leaves after invoker.keep_alive_s idle; learned: "
        "each action's own pre-warm and keep-alive windows from its idle-time histogram",
    )
    first_bin_s: float = Field(
        default=1.0, gt=0, description="idle times below this share the histogram's first bin"
    )
    range_s: float = Field(
        default=14_400.0,
        gt=0,
        description="idle times beyond this are out of the histogram's range",
    )
    bin_growth: float = Field(
        default=1.25, gt=1, description="each bin is this much wider than the one before"
    )
    head_quantile: float = Field(
        default=0.05, ge=0, lt=1, description="the pre-warm window ends at this idle-time quantile"
    )
    tail_quantile: float = Field(
        default=0.99, gt=0, le=1, description="the keep-alive window ends at this quantile"
    )
    margin: float = Field(
        default=0.1, ge=0, lt=1, description="pre-warm this much earlier, keep this much longer"
    )
    cold_start_worth_s: float = Field(
        default=300.0,
        gt=0,
        description="idle container-seconds one avoided cold start is worth: a window is "
        "trimmed where the calls it would catch do not pay for the memory it holds",
    )
    min_samples: int = Field(
        default=10, ge=1, description="fewer idle times than this: the fixed keep-alive"
    )
    max_beyond_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="more idle times than this share out of range: pre-warm by their running mean",
    )


class RetentionSettings(_Section):
    """How long idle containers stay beyond `invoker.keep_alive_s` (Knative's knobs)."""

    scale_down_delay_s: float = Field(
        default=0.0,
        ge=0,
        description="no idle container of an action leaves until the action has had no "
        "activation on its invoker for this long",
    )
    last_container_retention_s: float = Field(
        default=0.0,
        ge=0,
        description="an action's last container on an invoker stays idle this long "
        "(when longer than keep_alive_s): the next burst's first activations find it warm",
    )


class ApiSettings(_Section):
    """The controller's HTTP API: keys, namespace limits, and what a client may cost it."""

    auth: bool = Field(
        default=True, description="require an API key (`uuid:key`, HTTP basic auth) per namespace"
    )
    keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="namespace -> `uuid:key` accepted besides keys_file's (hashed when loaded)",
    )
    keys_file: Path | None = Field(
        default=None,
        description="hashed keys the API accepts; default ~/.config/broker-sched/api-keys.json, "
        "created with a first key for `guest` when no key is configured",
    )
    auth_file: Path | None = Field(
        default=None,
        description="where a created key is written for clients (`wsk`'s .wskprops form) and "
        "where `broker-sched invoke` reads AUTH from; default ~/.config/broker-sched/wskprops",
    )
    invocations_per_minute: int = Field(
        default=60, ge=1, description="per namespace, as OpenWhisk's actionInvokePerMinute"
    )
    concurrent_invocations: int = Field(
        default=30, ge=1, description="per namespace, as OpenWhisk's actionInvokeConcurrent"
    )
    blocking_wait_s: float = Field(
        default=60.0,
        gt=0,
        description="a blocking invoke waits at most this (and invocation_timeout_s), then "
        "answers 202 with the activation id, as OpenWhisk's controller does after 60 s",
    )
    max_header_bytes: int = Field(
        default=16_384, ge=1024, description="request line and headers; beyond: 400, closed"
    )
    read_timeout_s: float = Field(
        default=10.0, gt=0, description="a request's head and body must arrive within this"
    )
    keep_alive_s: int = Field(default=5, ge=1, description="an idle connection is closed after")
    max_connections: int = Field(
        default=1000, ge=1, description="open connections beyond this are answered 503"
    )


class MigrationSettings(_Section):
    """Moving to another transport: drain mode and `migrate move` (docs/migration.md)."""

    drain_from: str | None = Field(
        default=None, description="the old transport whose queues invokers drain"
    )
    source_queue_template: str | None = Field(
        default=None, description="queue names on the old transport (None: queue_template)"
    )
    drain_containers: int = Field(
        default=1, ge=1, description="per action and invoker, while its old queue has work"
    )
    drain_check_interval_s: float = Field(default=1.0, gt=0)
    drain_quiet_s: float = Field(
        default=10.0, ge=0, description="an old queue empty this long counts as drained"
    )
    move_batch: int = Field(default=100, ge=1)
    move_idle_timeout_s: float = Field(
        default=30.0, gt=0, description="move gives up on a queue whose work others hold"
    )
    move_marker_ttl_s: int = Field(
        default=604_800, ge=1, description="how long a redis target remembers a moved id"
    )


class CoreSettings(BaseSettings):
    """The core's settings; :data:`Settings` adds every registered backend's section."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    transport: str = "memory"
    policy: Literal["acs", "sharding"] = "acs"
    runtime: Literal["process", "simulated", "docker"] = "process"
    queue_template: str = "{namespace}-{action}"
    max_payload_bytes: int = Field(default=1_048_576, gt=0)
    invocation_timeout_s: float = Field(default=60.0, gt=0)
    controller_id: str = ""
    actions: list[Action] = Field(default_factory=list)
    scheduler: SchedulerSettings = SchedulerSettings()
    invoker: InvokerSettings = InvokerSettings()
    simulated: SimulatedRuntimeSettings = SimulatedRuntimeSettings()
    docker: DockerSettings = DockerSettings()
    prewarm: PrewarmSettings = PrewarmSettings()
    sequences: SequenceSettings = SequenceSettings()
    retention: RetentionSettings = RetentionSettings()
    keep_alive: KeepAliveSettings = KeepAliveSettings()
    migration: MigrationSettings = MigrationSettings()
    api: ApiSettings = ApiSettings()

    @model_validator(mode="before")
    @classmethod
    def _record_ttl_from_api(cls, data: Any) -> Any:
        """``api.record_ttl_s`` is ``invoker.record_ttl_s`` since invokers write the
        records: a config that sets the old key keeps meaning what it did (the new key
        wins when both are set)."""
        if not isinstance(data, dict):
            return data
        api = data.get("api")
        if not isinstance(api, Mapping) or "record_ttl_s" not in api:
            return data
        api = dict(api)
        ttl_s = api.pop("record_ttl_s")
        invoker = data.get("invoker", {})
        if isinstance(invoker, Mapping):
            invoker = {"record_ttl_s": ttl_s, **invoker}
        return {**data, "api": api, "invoker": invoker}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _config_file.get()
        file_source = [TomlConfigSettingsSource(settings_cls, toml_file=path)] if path else []
        return (init_settings, env_settings, *file_source)

    def queue_name(self, namespace: str, action: str) -> str:
        return self.queue_template.format(namespace=namespace, action=action)

    def section(self, model: type[Section]) -> Section:
        """The section whose model is ``model``: how a backend reads its own settings."""
        for name, field in type(self).model_fields.items():
            if field.annotation is model:
                return cast(Section, getattr(self, name))
        raise ConfigError(f"no settings section is a {model.__name__}: is its transport installed?")


def _with_backend_sections(core: type[CoreSettings]) -> type[CoreSettings]:
    fields: dict[str, Any] = {name: (model, model()) for name, model in settings_sections().items()}
    return create_model("Settings", __base__=core, __module__=__name__, **fields)


if TYPE_CHECKING:
    Settings = CoreSettings
else:
    Settings = _with_backend_sections(CoreSettings)


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build settings from an optional TOML file, the environment and ``overrides``.

    Raises :class:`ConfigError` naming each bad key, so a CLI can print one clear line.
    """
    _reject_unknown_env(os.environ)
    path = Path(config_file) if config_file is not None else None
    if path is not None and not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    token = _config_file.set(path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
    finally:
        _config_file.reset(token)


def _reject_unknown_env(environ: Mapping[str, str]) -> None:
    """pydantic-settings ignores unknown top-level variables; a typo must not be ignored."""
    for name in environ:
        if not name.startswith(ENV_PREFIX):
            continue
        key = name.removeprefix(ENV_PREFIX)
        field = key.split("__", 1)[0].lower()
        if field not in Settings.model_fields and not key.startswith(NON_SETTINGS_ENV):
            raise ConfigError(f"unknown setting in environment: {name}")
