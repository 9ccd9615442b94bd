"""The HTTP front door: OpenWhisk paths, status codes for each kind of failure."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from embedded import embedded_settings, eventually, stack_with

from broker_sched.api import Api
from broker_sched.model import Action

pytestmark = pytest.mark.slow


def call(base: str, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(base + path, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_invoke_and_errors_over_http() -> None:
    actions = [
        Action(name="echo", handler="broker_sched.samples:echo"),
        Action(name="fail", handler="broker_sched.samples:fail"),
    ]
    settings = embedded_settings(max_payload_bytes=1024)
    async with stack_with(actions, settings=settings) as stack:
        assert stack.controller is not None
        server = await Api(stack.controller, 1024).start("127.0.0.1", 0)
        base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with server:
            invoke = "/api/v1/namespaces/guest/actions/"

            status, record = await asyncio.to_thread(
                call, base, "POST", invoke + "echo?blocking=true", b'{"x": 1}'
            )
            assert (status, record["status"], record["result"]) == (200, "success", {"x": 1})

            status, record = await asyncio.to_thread(
                call, base, "POST", invoke + "fail?blocking=true", b"{}"
            )
            assert (status, record["status"]) == (502, "action_error")

            status, accepted = await asyncio.to_thread(call, base, "POST", invoke + "echo", b"{}")
            assert status == 202
            activation = f"/api/v1/namespaces/guest/activations/{accepted['activationId']}"
            async with asyncio.timeout(10):
                # Polling is what a client of a non-blocking invocation does.
                while (await asyncio.to_thread(call, base, "GET", activation))[0] != 200:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)

            checks = [
                ("POST", invoke + "nope?blocking=true", b"{}", 404),
                ("POST", invoke + "echo?blocking=true", b"not json", 400),
                ("POST", invoke + "echo?blocking=true", b'"' + b"x" * 2000 + b'"', 413),
                ("GET", "/nowhere", None, 404),
                ("GET", "/health", None, 200),
            ]
            for method, path, body, expected in checks:
                status, _ = await asyncio.to_thread(call, base, method, path, body)
                assert status == expected, (method, path)


async def test_metrics_show_backlog_containers_and_what_the_scheduler_did() -> None:
    actions = [Action(name="echo", handler="broker_sched.samples:echo")]
    async with stack_with(actions) as stack:
        controller = stack.controller
        assert controller is not None
        await controller.invoke("echo", {"x": 1})
        await eventually(
            lambda: any(beat.containers.get("guest/echo") for beat in controller.cluster.live())
        )
        server = await Api(controller, 1024).start("127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/metrics"
        async with server:
            with await asyncio.to_thread(urllib.request.urlopen, url, None, 30) as response:
                content_type = response.headers["Content-Type"]
                lines = set(response.read().decode().splitlines())

    assert content_type.startswith("text/plain; version=0.0.4")
    assert "# TYPE broker_sched_backlog_pending gauge" in lines
    assert 'broker_sched_backlog_pending{action="guest/echo"} 0' in lines
    assert 'broker_sched_containers{action="guest/echo",state="running"} 1' in lines
    assert 'broker_sched_events_total{kind="container_created"} 1' in lines
    assert "broker_sched_invokers 1" in lines
