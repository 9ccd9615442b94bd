"""What crosses the broker, and the action definitions both sides agree on.

Every wire message is JSON with a version field ``v`` and is validated where it enters a
component (:func:`decode`), so a bad message is rejected with a reason instead of
failing somewhere deep inside a proxy. Messages name actions; they never carry code:
the invoker resolves an action's handler from its own registry.
"""

from __future__ import annotations

import os
import time
from enum import StrEnum
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError
from pydantic_core import PydanticSerializationError

from broker_sched.errors import InvalidPayload, MalformedMessage

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,99}$")]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_id() -> str:
    """Sortable unique id: 12 hex digits of milliseconds, then 16 random hex digits.

    Sorting by id sorts by creation time, which keeps dead-letter and migration
    listings readable; the random part makes ids safe to use as idempotency keys.
    """
    return f"{now_ms():012x}{os.urandom(8).hex()}"


class Action(BaseModel):
    """A deployable function. ``handler`` is ``module:function`` for the process runtime,
    unless the action carries its own ``code`` (created through the API)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    namespace: Name = "guest"
    handler: str = "broker_sched.samples:echo"
    code: str = ""
    """OpenWhisk's ``exec.code``: Python source defining ``main``, or with ``binary`` a
    base64 zip of pure-Python files with ``__main__.py``; empty: ``handler`` is run."""
    binary: bool = False
    main: str = "main"
    """The function in ``code`` to run, as OpenWhisk's ``exec.main``."""
    parameters: dict[str, JsonValue] = Field(default_factory=dict)
    """Default parameters, merged under an object payload (the payload's keys win)."""
    revision: str = ""
    """Which stored version this is (the action store's id of the put); empty for an
    action defined only in the settings."""
    kind: str = Field(default="python", min_length=1)
    """The runtime kind the handler needs; a prewarmed stem cell of this kind and
    ``memory_mb`` can become this action's container."""
    sequence: tuple[str, ...] = ()
    """A sequence action (OpenWhisk's): these actions ("name" or "namespace/name") run
    in order, each one's result the next one's input; ``handler`` is then unused."""
    memory_mb: int = Field(default=256, gt=0)
    timeout_s: float = Field(default=60.0, gt=0)
    concurrency: int = Field(default=1, ge=1)
    max_containers: int = Field(default=50, ge=1)

    @property
    def fqn(self) -> str:
        return f"{self.namespace}/{self.name}"

    def with_parameters(self, payload: JsonValue) -> JsonValue:
        """``payload`` over the default parameters, as OpenWhisk merges them: only an
        object payload (or none) takes them."""
        if not self.parameters:
            return payload
        if payload is None:
            return dict(self.parameters)
        if isinstance(payload, dict):
            return {**self.parameters, **payload}
        return payload


def fqn(namespace: str, action: str) -> str:
    return f"{namespace}/{action}"


class Status(StrEnum):
    SUCCESS = "success"
    APPLICATION_ERROR = "application_error"
    ACTION_ERROR = "action_error"
    SYSTEM_ERROR = "system_error"
    TIMEOUT = "timeout"


class Start(StrEnum):
    COLD = "cold"
    PREWARM = "prewarm"
    WARM = "warm"
    RESUMED = "resumed"


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    v: Literal[1] = 1


class Activation(_Wire):
    id: str = Field(default_factory=new_id, min_length=1)
    namespace: Name
    action: Name
    payload: JsonValue = None
    reply_to: str = ""
    published_ms: int = Field(default_factory=now_ms)
    deadline_ms: int

    @property
    def fqn(self) -> str:
        return fqn(self.namespace, self.action)


class ActivationResult(_Wire):
    activation_id: str
    namespace: Name
    action: Name
    status: Status
    result: JsonValue = None
    error: str | None = None
    start: Start | None = None
    wait_ms: float = 0.0
    init_ms: float = 0.0
    run_ms: float = 0.0
    service_ms: float = 0.0
    """What the container spent on this activation, fetch to reply plus its last ack:
    the service time the scheduler sizes capacity with (``run_ms`` is the handler alone)."""
    container_id: str = ""
    invoker_id: str = ""
    steps: list[str] = Field(default_factory=list)
    """A sequence's record: the activation ids of the steps that ran, in order."""
    logs: list[str] = Field(default_factory=list)
    """What the run wrote to stdout and stderr, bounded (see the runtime's logs)."""
    start_ms: int = 0
    end_ms: int = 0
    """When the run started and ended (ms since the epoch; 0 when it never ran): an
    OpenWhisk activation's ``start`` and ``end``."""

    @property
    def ok(self) -> bool:
        return self.status is Status.SUCCESS


class ContainerRequest(_Wire):
    kind: Literal["create", "remove"]
    request_id: str = Field(default_factory=new_id)
    namespace: Name
    action: Name
    memory_mb: int = Field(gt=0)
    reply_to: str = ""
    reason: str = ""
    """Why a container is removed (scale-in, eviction, fair share), for the timeline."""


class ContainerReply(_Wire):
    request_id: str
    namespace: Name
    action: Name
    invoker_id: str
    ok: bool
    error: str | None = None
    container_id: str = ""
    start: Start | None = None
    create_ms: float = 0.0
    init_ms: float = 0.0
    sent_ms: int = Field(default_factory=now_ms)
    """The invoker's clock when it answered, the clock its heartbeats' ``sent_ms`` use:
    a heartbeat sent later already counts the container (or its absence)."""


class Heartbeat(_Wire):
    invoker_id: str
    free_slots: int
    free_memory_mb: int
    containers: dict[str, int] = Field(default_factory=dict)
    paused: dict[str, int] = Field(default_factory=dict)
    idle_s: dict[str, list[float]] = Field(default_factory=dict)
    """Per action, how long each idle (not busy) container has had no work: the LRU
    order in which a full cluster evicts."""
    draining: dict[str, int] = Field(default_factory=dict)
    """Drain mode: activations left on the old transport, per action."""
    prewarm: dict[str, int] = Field(default_factory=dict)
    """Stem cells ready per prewarm pool (``kind:memory_mb``)."""
    prewarm_hits: dict[str, int] = Field(default_factory=dict)
    """Per pool, container requests served from it since the invoker started."""
    prewarm_misses: dict[str, int] = Field(default_factory=dict)
    """Per pool, container requests of its kind and size that found it empty."""
    sent_ms: int = Field(default_factory=now_ms)


Message = TypeVar("Message", bound=_Wire)


def encode(message: _Wire) -> bytes:
    return message.model_dump_json().encode()


def encoded_activation(
    namespace: str, action: str, payload: JsonValue, *, reply_to: str, deadline_ms: int
) -> tuple[Activation, bytes]:
    """A new activation and its bytes, or :class:`InvalidPayload` for a payload the
    encoder refuses: a string JSON cannot carry (a lone surrogate) or a nesting deeper
    than pydantic follows (validated on construction, encoded only later)."""
    try:
        activation = Activation(
            namespace=namespace,
            action=action,
            payload=payload,
            reply_to=reply_to,
            deadline_ms=deadline_ms,
        )
        return activation, encode(activation)
    except ValidationError as exc:
        raise InvalidPayload(exc.errors()[0]["msg"]) from exc
    except PydanticSerializationError as exc:
        raise InvalidPayload(str(exc)) from exc


def decode(kind: type[Message], body: bytes) -> Message:
    """Parse and validate ``body``; anything wrong becomes :class:`MalformedMessage`."""
    try:
        return kind.model_validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors()[:3]
        )
        raise MalformedMessage(f"not a valid {kind.__name__}: {problems}") from exc
