"""Wire messages: round trips, and rejection with a reason for anything malformed."""

from __future__ import annotations

import json

import pytest

from broker_sched import model
from broker_sched.errors import MalformedMessage
from broker_sched.model import (
    Action,
    Activation,
    ActivationResult,
    ContainerReply,
    ContainerRequest,
    Heartbeat,
    Start,
    Status,
    decode,
    encode,
    new_id,
    now_ms,
)

WireMessage = Activation | ActivationResult | ContainerRequest | ContainerReply | Heartbeat

ACTIVATION = Activation(
    namespace="guest",
    action="echo",
    payload={"text": "héllo ✓", "n": [1, 2.5, None, True]},
    reply_to="replies.c1",
    deadline_ms=now_ms() + 60_000,
)


@pytest.mark.parametrize(
    "message",
    [
        ACTIVATION,
        ActivationResult(
            activation_id=ACTIVATION.id,
            namespace="guest",
            action="echo",
            status=Status.SUCCESS,
            result={"ok": True},
            start=Start.COLD,
            wait_ms=1.5,
            init_ms=700.0,
            run_ms=2.0,
            container_id="c-1",
            invoker_id="inv-0",
        ),
        ContainerRequest(kind="create", namespace="guest", action="echo", memory_mb=256),
        ContainerReply(
            request_id=new_id(), namespace="guest", action="echo", invoker_id="inv-0", ok=True
        ),
        Heartbeat(invoker_id="inv-0", free_slots=3, free_memory_mb=1024, containers={"g/e": 2}),
    ],
    ids=lambda message: type(message).__name__,
)
def test_encode_decode_round_trip(message: WireMessage) -> None:
    assert decode(type(message), encode(message)) == message


def test_wire_format_is_versioned_json() -> None:
    body = json.loads(encode(ACTIVATION))
    assert body["v"] == 1
    assert body["payload"] == {"text": "héllo ✓", "n": [1, 2.5, None, True]}


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    body = json.loads(encode(ACTIVATION))
    body["added_in_a_later_release"] = 1
    assert decode(Activation, json.dumps(body).encode()) == ACTIVATION


def _activation_without(field: str) -> bytes:
    body = json.loads(encode(ACTIVATION))
    del body[field]
    return json.dumps(body).encode()


def _activation_with(**changes: object) -> bytes:
    return json.dumps({**json.loads(encode(ACTIVATION)), **changes}).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x00\xfenot json{", "Activation"),
        (b"[1, 2]", "Activation"),
        (_activation_without("deadline_ms"), "deadline_ms"),
        (_activation_without("action"), "action"),
        (_activation_with(v=2), "v"),
        (_activation_with(action="../../etc"), "action"),
        (_activation_with(id=""), "id"),
    ],
    ids=["garbage", "not-an-object", "no-deadline", "no-action", "wrong-v", "bad-name", "empty-id"],
)
def test_malformed_messages_are_rejected_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason) as rejected:
        decode(Activation, body)
    assert str(rejected.value).startswith("not a valid Activation")


def test_ids_are_unique_and_time_ordered(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [new_id() for _ in range(1_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 28 and int(i, 16) >= 0 for i in ids)

    clock = iter(range(1_700_000_000_000, 1_700_000_000_100))
    monkeypatch.setattr(model, "now_ms", lambda: next(clock))
    in_order = [new_id() for _ in range(100)]
    assert sorted(in_order) == in_order


def test_id_starts_with_the_creation_millisecond() -> None:
    before = now_ms()
    stamp = int(new_id()[:12], 16)
    assert before <= stamp <= now_ms()


def test_action_names_and_defaults() -> None:
    action = Action(name="resize-image", namespace="photos")
    assert action.fqn == "photos/resize-image"
    assert action.concurrency == 1
    with pytest.raises(ValueError, match="name"):
        Action(name="bad/name")


def test_result_ok_only_on_success() -> None:
    def result(status: Status) -> ActivationResult:
        return ActivationResult(activation_id="a", namespace="g", action="e", status=status)

    assert result(Status.SUCCESS).ok
    assert not any(result(s).ok for s in Status if s is not Status.SUCCESS)
