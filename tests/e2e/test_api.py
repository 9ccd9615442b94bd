"""The HTTP front door: OpenWhisk paths, keys, status codes for each kind of failure."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from embedded import embedded_settings, eventually, stack_with

from broker_sched.api import Api
from broker_sched.api_keys import Credential, Keyring, digest
from broker_sched.api_server import ApiServer
from broker_sched.config import Settings
from broker_sched.model import Action
from transports.memory import MemoryBroker, MemoryTransport

pytestmark = pytest.mark.slow

GUEST = "8f1c0b84-77a5-4b6e-9f0a-1b2c3d4e5f60:guest-secret"
OTHER = "0d2e4f60-1a2b-4c3d-8e9f-a0b1c2d3e4f5:other-secret"
KEYRING = Keyring(
    [
        Credential(GUEST.split(":")[0], "guest", digest("guest-secret")),
        Credential(OTHER.split(":")[0], "other", digest("other-secret")),
    ]
)
INVOKE = "/api/v1/namespaces/guest/actions/"


def basic(auth: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}


def call(
    base: str, method: str, path: str, body: bytes | None = None, auth: str | None = GUEST
) -> tuple[int, Any, dict[str, str]]:
    headers = basic(auth) if auth else {}
    request = urllib.request.Request(base + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


@asynccontextmanager
async def api_on(actions: list[Action], settings: Settings) -> AsyncIterator[ApiServer]:
    async with stack_with(actions, settings=settings) as stack:
        assert stack.controller is not None
        async with await Api(stack.controller, KEYRING).start("127.0.0.1", 0) as server:
            yield server


async def test_invoke_and_errors_over_http() -> None:
    actions = [
        Action(name="echo", handler="broker_sched.samples:echo"),
        Action(name="fail", handler="broker_sched.samples:fail"),
    ]
    async with api_on(actions, embedded_settings(max_payload_bytes=1024)) as server:
        base = server.url
        status, record, headers = await asyncio.to_thread(
            call, base, "POST", INVOKE + "echo?blocking=true", b'{"x": 1}'
        )
        assert status == 200
        assert record["response"] == {"result": {"x": 1}, "status": "success", "success": True}
        assert headers["x-openwhisk-activation-id"] == record["activationId"]

        status, record, _ = await asyncio.to_thread(
            call, base, "POST", INVOKE + "fail?blocking=true", b"{}"
        )
        assert (status, record["response"]["status"]) == (502, "action developer error")
        assert record["response"]["result"]["error"].startswith("ValueError")

        status, accepted, headers = await asyncio.to_thread(
            call, base, "POST", INVOKE + "echo", b"{}"
        )
        assert status == 202
        assert headers["x-openwhisk-activation-id"] == accepted["activationId"]
        activation = f"/api/v1/namespaces/_/activations/{accepted['activationId']}"
        async with asyncio.timeout(10):
            # Polling is what a client of a non-blocking invocation does.
            while (await asyncio.to_thread(call, base, "GET", activation))[0] != 200:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        status, listed, _ = await asyncio.to_thread(
            call, base, "GET", "/api/v1/namespaces/guest/activations?limit=2"
        )
        assert status == 200
        assert [r["activationId"] for r in listed][:1] == [accepted["activationId"]]

        checks = [
            ("POST", INVOKE + "nope?blocking=true", b"{}", GUEST, 404),
            ("POST", INVOKE + "echo?blocking=true", b"not json", GUEST, 400),
            ("POST", INVOKE + "echo?blocking=true", b'"\xff\xfe"', GUEST, 400),
            ("POST", INVOKE + "echo?blocking=true", b'"' + b"x" * 2000 + b'"', GUEST, 413),
            ("POST", INVOKE + "echo?blocking=true", b"{}", None, 401),
            ("POST", INVOKE + "echo?blocking=true", b"{}", GUEST.replace("secret", "guess"), 401),
            ("POST", INVOKE + "echo?blocking=true", b"{}", OTHER, 403),
            ("GET", "/api/v1/namespaces/other/activations", None, GUEST, 403),
            ("GET", activation, None, OTHER, 404),
            ("GET", "/nowhere", None, GUEST, 404),
            ("GET", "/health", None, None, 200),
        ]
        for method, path, body, auth, expected in checks:
            status, _, headers = await asyncio.to_thread(call, base, method, path, body, auth)
            assert status == expected, (method, path, auth)
            if status == 401:
                assert headers["www-authenticate"].startswith("Basic")


async def test_namespace_limits_answer_429_with_retry_after() -> None:
    actions = [Action(name="echo", handler="broker_sched.samples:echo")]
    settings = embedded_settings(api={"invocations_per_minute": 3})
    async with api_on(actions, settings) as server:
        statuses = []
        for _ in range(4):
            status, _, headers = await asyncio.to_thread(
                call, server.url, "POST", INVOKE + "echo?blocking=true", b"{}"
            )
            statuses.append(status)
        assert statuses == [200, 200, 200, 429]
        assert 1 <= int(headers["retry-after"]) <= 60
        status, _, _ = await asyncio.to_thread(
            call, server.url, "POST", "/api/v1/namespaces/other/actions/echo", b"{}", OTHER
        )
        assert status == 404, "another namespace has its own budget (and no such action)"


async def test_openapi_document_describes_the_paths() -> None:
    async with api_on([], embedded_settings()) as server:
        status, spec, _ = await asyncio.to_thread(
            call, server.url, "GET", "/api/v1/openapi.json", None, None
        )
    assert status == 200
    assert spec["openapi"].startswith("3.")
    activation = "/api/v1/namespaces/{namespace}/activations/{activationId}"
    assert {
        "/api/v1/namespaces/{namespace}/actions/{action}",
        activation,
        activation + "/result",
        activation + "/logs",
        "/api/v1/namespaces/{namespace}/actions",
    } <= set(spec["paths"])
    actions = spec["paths"]["/api/v1/namespaces/{namespace}/actions/{action}"]
    assert {"put", "get", "delete", "post"} <= set(actions)
    assert spec["components"]["securitySchemes"]["basic"]["scheme"] == "basic"


async def test_metrics_show_backlog_containers_and_what_the_scheduler_did() -> None:
    actions = [Action(name="echo", handler="broker_sched.samples:echo")]
    async with stack_with(actions) as stack:
        controller = stack.controller
        assert controller is not None
        await controller.invoke("echo", {"x": 1})
        await eventually(
            lambda: any(beat.containers.get("guest/echo") for beat in controller.cluster.live())
        )
        async with await Api(controller, KEYRING).start("127.0.0.1", 0) as server:
            await asyncio.to_thread(call, server.url, "GET", "/health")
            url = server.url + "/metrics"
            with await asyncio.to_thread(urllib.request.urlopen, url, None, 30) as response:
                content_type = response.headers["Content-Type"]
                lines = set(response.read().decode().splitlines())

    assert content_type.startswith("text/plain; version=")
    assert "# TYPE broker_sched_backlog_pending gauge" in lines
    assert 'broker_sched_backlog_pending{action="guest/echo"} 0.0' in lines
    assert 'broker_sched_containers{action="guest/echo",state="running"} 1.0' in lines
    assert 'broker_sched_events_total{kind="container_created"} 1.0' in lines
    assert "broker_sched_invokers 1.0" in lines
    assert 'broker_sched_api_requests_total{code="200",endpoint="health"} 1.0' in lines


async def test_any_controller_serves_the_records_even_after_the_first_is_gone() -> None:
    broker = MemoryBroker()
    actions = [Action(name="echo", handler="broker_sched.samples:echo")]
    settings = embedded_settings()
    ids = []
    async with stack_with(actions, settings=settings, transport=MemoryTransport(broker)) as first:
        assert first.controller is not None
        api = Api(first.controller, KEYRING)
        async with await api.start("127.0.0.1", 0) as server:
            for n in range(3):
                status, accepted, _ = await asyncio.to_thread(
                    call, server.url, "POST", INVOKE + "echo", json.dumps({"n": n}).encode()
                )
                assert status == 202
                ids.append(accepted["activationId"])
            await eventually(lambda: all(i in first.controller.results for i in ids))
            await api.records.flush()

    second = stack_with(
        actions, settings=settings, role="controller", transport=MemoryTransport(broker)
    )
    async with second, await Api(second.controller, KEYRING).start("127.0.0.1", 0) as server:
        status, record, _ = await asyncio.to_thread(
            call, server.url, "GET", f"/api/v1/namespaces/guest/activations/{ids[0]}"
        )
        assert (status, record["response"]["result"]) == (200, {"n": 0})
        status, listed, _ = await asyncio.to_thread(
            call, server.url, "GET", "/api/v1/namespaces/_/activations"
        )
        assert [r["activationId"] for r in listed] == ids[::-1]
        status, _, _ = await asyncio.to_thread(
            call, server.url, "GET", f"/api/v1/namespaces/other/activations/{ids[0]}", None, OTHER
        )
        assert status == 404, "another namespace's record is not there for it"


async def test_a_sequence_over_http_has_a_record_per_step_and_one_for_the_whole() -> None:
    actions = [
        Action(name="echo", handler="broker_sched.samples:echo"),
        Action(name="twice", sequence=("echo", "echo")),
    ]
    async with api_on(actions, embedded_settings()) as server:
        status, record, _ = await asyncio.to_thread(
            call, server.url, "POST", INVOKE + "twice?blocking=true", b'{"x": 2}'
        )
        assert (status, record["response"]["result"]) == (200, {"x": 2})
        assert len(record["logs"]) == 2, "a sequence's logs are its steps' activation ids"
        for activation_id in [record["activationId"], *record["logs"]]:
            path = f"/api/v1/namespaces/_/activations/{activation_id}"
            status, kept, _ = await asyncio.to_thread(call, server.url, "GET", path)
            assert status == 200, kept
            assert kept["activationId"] == activation_id


OPENWHISK_FIELDS = {
    "activationId",
    "namespace",
    "name",
    "subject",
    "version",
    "publish",
    "start",
    "end",
    "duration",
    "response",
    "logs",
    "annotations",
}
"""What OpenWhisk's controller answers for an activation (``toExtendedJson``)."""


async def test_answers_are_openwhisk_activations_with_result_and_logs_routes() -> None:
    actions = [
        Action(name="chatty", handler="broker_sched.samples:chatty"),
        Action(name="app_error", handler="broker_sched.samples:app_error"),
        Action(name="echo", handler="broker_sched.samples:echo"),
    ]
    async with api_on(actions, embedded_settings()) as server:
        base = server.url
        status, activation, headers = await asyncio.to_thread(
            call, base, "POST", INVOKE + "chatty?blocking=true", b"{}"
        )
        assert status == 200
        assert set(activation) == OPENWHISK_FIELDS
        activation_id = activation["activationId"]
        assert headers["x-openwhisk-activation-id"] == activation_id
        assert (activation["namespace"], activation["name"]) == ("guest", "chatty")
        assert activation["response"] == {
            "result": {"printed": True},
            "status": "success",
            "success": True,
        }
        assert activation["end"] - activation["start"] == activation["duration"] >= 0
        assert any(
            line.endswith("stdout: chatty handler says hello") for line in activation["logs"]
        )
        annotations = {a["key"]: a["value"] for a in activation["annotations"]}
        assert annotations["path"] == "guest/chatty"
        assert annotations["kind"] == "python"
        assert annotations["limits"] == {"timeout": 60000, "memory": 256, "concurrency": 1}
        assert annotations["timeout"] is False
        assert "initTime" in annotations, "the first activation started its container"

        status, result, headers = await asyncio.to_thread(
            call, base, "POST", INVOKE + "chatty?blocking=true&result=true", b"{}"
        )
        assert (status, result) == (200, {"printed": True})
        assert headers["x-openwhisk-activation-id"]

        activations = "/api/v1/namespaces/_/activations/"
        status, response, _ = await asyncio.to_thread(
            call, base, "GET", activations + activation_id + "/result"
        )
        assert (status, response) == (200, activation["response"])
        status, logs, _ = await asyncio.to_thread(
            call, base, "GET", activations + activation_id + "/logs"
        )
        assert (status, logs) == (200, {"logs": activation["logs"]})
        status, _, _ = await asyncio.to_thread(call, base, "GET", activations + "nope/logs")
        assert status == 404

        status, activation, _ = await asyncio.to_thread(
            call, base, "POST", INVOKE + "app_error?blocking=true", b"{}"
        )
        assert status == 502
        assert activation["response"]["status"] == "application error"
        assert activation["response"]["result"] == {
            "error": "sample handler reports an application error"
        }

        status, result, _ = await asyncio.to_thread(
            call, base, "POST", INVOKE + "echo?blocking=true", b"[1, 2]"
        )
        assert (status, result) == (200, [1, 2]), "an array result is answered as itself"

        status, summaries, _ = await asyncio.to_thread(
            call, base, "GET", "/api/v1/namespaces/_/activations?limit=10"
        )
        assert status == 200
        assert all("response" not in s and "statusCode" in s for s in summaries)
        assert {s["statusCode"] for s in summaries} == {0, 1}
        status, docs, _ = await asyncio.to_thread(
            call, base, "GET", "/api/v1/namespaces/_/activations?limit=10&docs=true"
        )
        assert all(set(d) == OPENWHISK_FIELDS for d in docs)


async def test_a_blocking_call_past_its_wait_is_accepted_with_the_id() -> None:
    actions = [Action(name="sleep", handler="broker_sched.samples:sleep", timeout_s=30)]
    settings = embedded_settings(invocation_timeout_s=60.0, api={"blocking_wait_s": 1.0})
    async with api_on(actions, settings) as server:
        status, accepted, headers = await asyncio.to_thread(
            call, server.url, "POST", INVOKE + "sleep?blocking=true", b'{"ms": 5000}'
        )
        assert status == 202
        assert headers["x-openwhisk-activation-id"] == accepted["activationId"]
        path = f"/api/v1/namespaces/_/activations/{accepted['activationId']}"
        async with asyncio.timeout(30):
            # Polling is what a client of an accepted invocation does.
            while (found := await asyncio.to_thread(call, server.url, "GET", path))[0] != 200:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        activation = found[1]
        assert activation["response"]["result"] == {"ms": 5000}, "it ran on to its end"
