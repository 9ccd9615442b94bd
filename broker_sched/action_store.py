"""Actions managed through the API, kept in the deployment's own broker.

An action put through ``PUT …/actions/{name}`` (OpenWhisk's action document, or
broker-sched's own ``handler`` reference) is validated here and stored through the
transport's record contract (a Redis key, a NATS KV bucket, a compacted Kafka topic),
so every controller and invoker reads the same set without a restart: a stack reloads
it every heartbeat interval (:meth:`ActionStore.load`). Each put is a new revision; a
delete is a tombstone, so a reader that missed the delete still learns of it.

Records expire after ``invoker.record_ttl_s``, so each controller puts its actions
again every quarter of that (:meth:`ActionStore.keep_alive`): an action outlives any
one process, but not a deployment with no controller running for longer than the TTL.
Actions in the settings (TOML) seed the store at start where it has no such action.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import time
import zipfile
from typing import Any

from pydantic import ValidationError

from broker_sched.errors import InvalidAction, MalformedMessage
from broker_sched.model import Action, Name, _Wire, decode, encode
from transports.base import Transport

SCOPE = "-actions"
"""The records' scope: activation records are scoped by namespace, and a namespace
name cannot start with ``-``, so no namespace's records share it."""
MAX_ACTIONS = 10_000
"""The most actions a deployment holds (a load reads them all)."""
MAX_CODE_BYTES = 512 * 1024
"""The largest ``exec.code`` (a zip counted base64-encoded): a stored action travels
through the broker, whose messages are about a megabyte at most."""

LIMITS = {
    "timeout": (100, 300_000),
    "memory": (128, 8192),
    "concurrency": (1, 500),
    "logs": (0, 10),
}
"""OpenWhisk's limits and the ranges accepted (ms, MB, runs per container, MB)."""


class StoredAction(_Wire):
    """One revision of an action in the store; ``action`` None is a delete."""

    namespace: Name
    name: Name
    revision: str
    action: Action | None = None


def action_from_document(namespace: str, name: str, document: Any) -> Action:
    """The action an OpenWhisk action document describes, or :class:`InvalidAction`
    with what is wrong.

    ``exec`` is ``{"kind": "python:3", "code": ..., "main": "main", "binary": false}``,
    ``{"kind": "sequence", "components": ["/ns/a", ...]}``, or broker-sched's own
    ``{"kind": "python:3", "handler": "module:function"}`` (a module installed on the
    invokers); ``parameters`` are ``[{"key": ..., "value": ...}]``; ``limits`` are
    ``{"timeout": ms, "memory": MB, "concurrency": n, "logs": MB}``.
    """
    if not isinstance(document, dict):
        raise InvalidAction("the action document must be a JSON object")
    exec_ = document.get("exec")
    if not isinstance(exec_, dict):
        raise InvalidAction("exec is required: {kind, code, main} or {kind, handler}")
    fields: dict[str, Any] = {"name": name, "namespace": namespace}
    kind = exec_.get("kind")
    if kind == "sequence":
        components = exec_.get("components")
        if not isinstance(components, list) or not components:
            raise InvalidAction("a sequence's exec.components must be a non-empty list")
        fields["sequence"] = tuple(_component(c, namespace) for c in components)
    elif isinstance(kind, str) and kind.startswith("python"):
        fields.update(_python_exec(exec_))
    else:
        raise InvalidAction(f"exec.kind {kind!r} is not supported: python:3 or sequence")
    fields["parameters"] = _parameters(document.get("parameters", []))
    fields.update(_limits(document.get("limits", {})))
    try:
        return Action(**fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise InvalidAction(f"{where}: {error['msg']}") from None


def action_document(action: Action) -> dict[str, Any]:
    """The action as OpenWhisk answers ``GET …/actions/{name}``; ``exec.handler`` is
    broker-sched's own reference to a module installed on the invokers."""
    exec_: dict[str, Any]
    if action.sequence:
        exec_ = {"kind": "sequence", "components": [f"/{c}" for c in action.sequence]}
    elif action.code:
        exec_ = {"kind": "python:3", "code": action.code, "main": action.main}
        exec_["binary"] = action.binary
    else:
        exec_ = {"kind": "python:3", "handler": action.handler, "binary": False}
    return {
        "namespace": action.namespace,
        "name": action.name,
        "version": "0.0.1",
        "publish": False,
        "exec": exec_,
        "parameters": [{"key": k, "value": v} for k, v in action.parameters.items()],
        "limits": {
            "timeout": round(action.timeout_s * 1000),
            "memory": action.memory_mb,
            "concurrency": action.concurrency,
            "logs": 0,
        },
        "annotations": [{"key": "exec", "value": exec_["kind"]}],
        "revision": action.revision,
    }


def _python_exec(exec_: dict[str, Any]) -> dict[str, Any]:
    code, handler = exec_.get("code"), exec_.get("handler")
    if (code is None) == (handler is None):
        raise InvalidAction("exec needs one of code (the source or a zip) or handler")
    if handler is not None:
        if not isinstance(handler, str) or ":" not in handler:
            raise InvalidAction(f"exec.handler must look like 'module:function', got {handler!r}")
        return {"handler": handler}
    if not isinstance(code, str) or not code:
        raise InvalidAction("exec.code must be a non-empty string")
    size = len(code.encode())
    if size > MAX_CODE_BYTES:
        raise InvalidAction(f"exec.code is {size} bytes, more than the limit of {MAX_CODE_BYTES}")
    main = exec_.get("main", "main")
    if not isinstance(main, str) or not main.isidentifier():
        raise InvalidAction(f"exec.main must name a function, got {main!r}")
    binary = exec_.get("binary", False)
    if not isinstance(binary, bool):
        raise InvalidAction("exec.binary must be true or false")
    if binary:
        _check_zip(code)
    else:
        try:
            compile(code, "<action>", "exec")
        except (SyntaxError, ValueError) as exc:
            raise InvalidAction(f"exec.code does not compile: {exc}") from None
    return {"code": code, "main": main, "binary": binary}


def _check_zip(code: str) -> None:
    try:
        data = base64.b64decode(code, validate=True)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except (binascii.Error, ValueError, zipfile.BadZipFile) as exc:
        raise InvalidAction(f"exec.code is not a base64 zip: {exc}") from None
    if "__main__.py" not in names:
        raise InvalidAction("the zip has no __main__.py")
    unsafe = [n for n in names if n.startswith("/") or ".." in n.split("/")]
    if unsafe:
        raise InvalidAction(f"the zip has paths outside it: {unsafe[:3]}")


def _component(component: Any, namespace: str) -> str:
    """``/ns/name``, ``ns/name`` or ``name`` as the ``namespace/name`` of a step."""
    if not isinstance(component, str) or not component.strip("/"):
        raise InvalidAction(f"a sequence component must be an action name, got {component!r}")
    parts = component.strip("/").split("/")
    if len(parts) == 1:
        return f"{namespace}/{parts[0]}"
    if len(parts) == 2:
        return "/".join(parts)
    raise InvalidAction(f"packages are not supported: {component!r}")


def _parameters(parameters: Any) -> dict[str, Any]:
    if isinstance(parameters, dict):
        return parameters
    if not isinstance(parameters, list):
        raise InvalidAction("parameters must be a list of {key, value}")
    merged: dict[str, Any] = {}
    for parameter in parameters:
        if not isinstance(parameter, dict) or not isinstance(parameter.get("key"), str):
            raise InvalidAction(f"a parameter must be {{key, value}}, got {parameter!r}")
        merged[parameter["key"]] = parameter.get("value")
    return merged


def _limits(limits: Any) -> dict[str, Any]:
    if not isinstance(limits, dict):
        raise InvalidAction("limits must be an object: {timeout, memory, concurrency, logs}")
    unknown = set(limits) - set(LIMITS)
    if unknown:
        raise InvalidAction(f"unknown limits {sorted(unknown)}: known are {sorted(LIMITS)}")
    for key, value in limits.items():
        low, high = LIMITS[key]
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise InvalidAction(
                f"limits.{key} must be an integer from {low} to {high}, got {value!r}"
            )
    fields: dict[str, Any] = {}
    if "timeout" in limits:
        fields["timeout_s"] = limits["timeout"] / 1000
    if "memory" in limits:
        fields["memory_mb"] = limits["memory"]
    if "concurrency" in limits:
        fields["concurrency"] = limits["concurrency"]
    return fields


class ActionStore:
    """The stored actions, through the transport's records."""

    def __init__(self, transport: Transport, ttl_s: float) -> None:
        self.transport = transport
        self.ttl_s = ttl_s
        self._last_ns = 0

    def _revision(self) -> str:
        """A revision later than every one this store made before: nanoseconds since
        the epoch (bumped when the clock has not moved), then random digits, so
        revisions from different processes differ and sort by time."""
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return f"{self._last_ns:020d}{os.urandom(4).hex()}"

    async def put(self, action: Action) -> Action:
        """Store ``action`` as a new revision; returns it with that revision."""
        stored = action.model_copy(update={"revision": self._revision()})
        await self._put(
            StoredAction(
                namespace=action.namespace,
                name=action.name,
                revision=stored.revision,
                action=stored,
            )
        )
        return stored

    async def delete(self, namespace: str, name: str) -> None:
        await self._put(StoredAction(namespace=namespace, name=name, revision=self._revision()))

    async def load(self) -> dict[str, Action]:
        """Every stored action by ``namespace/name`` (deleted ones left out)."""
        bodies = await self.transport.recent_records(SCOPE, MAX_ACTIONS)
        latest: dict[str, StoredAction] = {}
        for body in bodies:
            try:
                stored = decode(StoredAction, body)
            except MalformedMessage:
                continue
            key = f"{stored.namespace}/{stored.name}"
            if key not in latest or latest[key].revision < stored.revision:
                latest[key] = stored
        return {key: s.action for key, s in latest.items() if s.action is not None}

    async def seed(self, actions: dict[str, Action]) -> None:
        """Store the settings' actions the store does not have yet."""
        stored = await self.load()
        for key, action in actions.items():
            if key not in stored:
                await self.put(action)

    async def keep_alive(self, actions: dict[str, Action]) -> None:
        """Put each action again under its own revision, so its record does not expire."""
        for action in actions.values():
            await self._put(
                StoredAction(
                    namespace=action.namespace,
                    name=action.name,
                    revision=action.revision or self._revision(),
                    action=action,
                )
            )

    async def _put(self, stored: StoredAction) -> None:
        key = f"{stored.namespace}/{stored.name}".encode().hex()
        await self.transport.put_record(SCOPE, key, encode(stored), self.ttl_s)
