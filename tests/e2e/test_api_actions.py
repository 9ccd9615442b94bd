"""Actions managed through the API: OpenWhisk's action document, stored in the broker,
seen by every controller; bad documents refused with one clear line each."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import zipfile
from typing import Any

import pytest
from embedded import embedded_settings, eventually, stack_with
from test_api import GUEST, KEYRING, api_on, call

from broker_sched.action_store import MAX_CODE_BYTES
from broker_sched.api import Api
from broker_sched.model import Action
from transports.memory import MemoryBroker, MemoryTransport

pytestmark = pytest.mark.slow

ACTIONS = "/api/v1/namespaces/_/actions/"
HELLO = """
def main(args):
    name = args.get("name", "stranger")
    print("greeting", name)
    return {"greeting": f"{args.get('salutation', 'hello')} {name}"}
"""


def python(code: str, **fields: Any) -> bytes:
    return json.dumps({"exec": {"kind": "python:3", "code": code}, **fields}).encode()


async def http(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
    status, answer, _ = await asyncio.to_thread(call, base, method, path, data, GUEST)
    return status, answer


async def test_an_action_is_created_invoked_updated_listed_and_deleted() -> None:
    async with api_on([], embedded_settings()) as server:
        base = server.url
        document = python(
            HELLO,
            parameters=[{"key": "salutation", "value": "hi"}],
            limits={"timeout": 5000, "memory": 256, "concurrency": 1},
        )
        status, created = await http(base, "PUT", ACTIONS + "hello", document)
        assert status == 200, created
        assert created["exec"]["code"] == HELLO
        assert created["parameters"] == [{"key": "salutation", "value": "hi"}]
        assert created["limits"]["timeout"] == 5000

        status, result = await http(
            base, "POST", ACTIONS + "hello?blocking=true&result=true", {"name": "ann"}
        )
        assert (status, result) == (200, {"greeting": "hi ann"}), "parameters under the payload"
        status, result = await http(
            base, "POST", ACTIONS + "hello?blocking=true", {"name": "bo", "salutation": "yo"}
        )
        assert result["response"]["result"] == {"greeting": "yo bo"}, "the payload wins"
        assert any(line.endswith("stdout: greeting bo") for line in result["logs"])

        status, answer = await http(base, "PUT", ACTIONS + "hello", python(HELLO))
        assert status == 409, answer
        assert "overwrite=true" in answer["error"]

        status, got = await http(base, "GET", ACTIONS + "hello")
        assert (status, got["exec"]["code"]) == (200, HELLO)
        status, listed = await http(base, "GET", "/api/v1/namespaces/_/actions")
        assert [a["name"] for a in listed] == ["hello"]
        assert "code" not in listed[0]["exec"]

        status, _ = await http(base, "DELETE", ACTIONS + "hello")
        assert status == 200
        status, answer = await http(base, "POST", ACTIONS + "hello?blocking=true", {})
        assert status == 404, answer
        status, _ = await http(base, "GET", ACTIONS + "hello")
        assert status == 404


async def test_a_zipped_action_imports_its_own_modules() -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr(
            "__main__.py", "import helper\n\ndef main(args):\n    return helper.f(args)\n"
        )
        zipped.writestr("helper.py", "def f(args):\n    return {'doubled': args['n'] * 2}\n")
    code = base64.b64encode(archive.getvalue()).decode()
    async with api_on([], embedded_settings()) as server:
        document = {"exec": {"kind": "python:3", "code": code, "binary": True}}
        status, created = await http(server.url, "PUT", ACTIONS + "zipped", document)
        assert status == 200, created
        status, result = await http(
            server.url, "POST", ACTIONS + "zipped?blocking=true&result=true", {"n": 21}
        )
        assert (status, result) == (200, {"doubled": 42})


BAD_DOCUMENTS = [
    ("oversized code", python("#" * (MAX_CODE_BYTES + 1)), 413, "more than the limit"),
    ("syntax error", python("def main(args) return 1"), 400, "does not compile"),
    (
        "import failure",
        python("import no_such_module\ndef main(a): return a"),
        400,
        "ModuleNotFoundError",
    ),
    ("main not callable", python("main = 3"), 400, "not a function"),
    ("no main", python("def other(a): return a"), 400, "defines no 'main'"),
    ("memory limit", python(HELLO, limits={"memory": 64}), 400, "limits.memory"),
    ("unknown limit", python(HELLO, limits={"disk": 1}), 400, "unknown limits"),
    ("another kind", b'{"exec": {"kind": "nodejs:20", "code": "x"}}', 400, "not supported"),
    ("no exec", b"{}", 400, "exec is required"),
    (
        "bad zip",
        b'{"exec": {"kind": "python:3", "code": "bm90IGEgemlw", "binary": true}}',
        400,
        "not a base64 zip",
    ),
    ("not json", b"{", 400, "not JSON"),
]


@pytest.mark.parametrize(
    ("document", "status", "error"),
    [case[1:] for case in BAD_DOCUMENTS],
    ids=[case[0] for case in BAD_DOCUMENTS],
)
async def test_bad_documents_are_refused_with_one_clear_line(
    document: bytes, status: int, error: str
) -> None:
    settings = embedded_settings(max_payload_bytes=2 * MAX_CODE_BYTES)
    async with api_on([Action(name="fixed")], settings) as server:
        got, answer = await http(server.url, "PUT", ACTIONS + "bad", document)
        assert (got, error in answer["error"]) == (status, True), answer
        assert "\n" not in answer["error"].strip()
        got, _ = await http(server.url, "GET", ACTIONS + "bad")
        assert got == 404, "nothing was stored"


async def test_the_settings_actions_are_not_changed_through_the_api() -> None:
    async with api_on([Action(name="fixed")], embedded_settings()) as server:
        for method in ("PUT", "DELETE"):
            got, answer = await http(
                server.url, method, ACTIONS + "fixed?overwrite=true", python(HELLO)
            )
            assert got == 409, answer
            assert "settings" in answer["error"]


async def test_every_controller_sees_a_created_action_within_a_heartbeat_interval() -> None:
    broker = MemoryBroker()
    settings = embedded_settings()
    interval_s = settings.invoker.heartbeat_interval_s
    async with stack_with([], settings=settings, transport=MemoryTransport(broker)) as first:
        other = stack_with(
            [], settings=settings, role="controller", transport=MemoryTransport(broker)
        )
        async with other, await Api(first.controller, KEYRING).start("127.0.0.1", 0) as server:
            assert other.controller is not None
            status, _ = await http(server.url, "PUT", ACTIONS + "hello", python(HELLO))
            assert status == 200
            put_s = time.monotonic()
            await eventually(lambda: "guest/hello" in other.controller.actions, timeout_s=30)
            seen_s = time.monotonic() - put_s
            result = await other.controller.invoke("hello", {"name": "other"}, timeout_s=60)
            assert result.result == {"greeting": "hello other"}
            print(f"seen by the other controller after {seen_s:.3f} s (interval {interval_s} s)")


SLOW_VERSION = """
import time
def main(args):
    time.sleep(args.get("s", 0))
    return {"version": %d}
"""


async def test_an_update_lets_running_activations_finish_on_the_old_version() -> None:
    async with api_on([], embedded_settings()) as server:
        base = server.url
        status, _ = await http(base, "PUT", ACTIONS + "v", python(SLOW_VERSION % 1))
        assert status == 200
        warm = await http(base, "POST", ACTIONS + "v?blocking=true&result=true", {})
        assert warm == (200, {"version": 1}), "a container of version 1 is up"
        running = asyncio.create_task(
            http(base, "POST", ACTIONS + "v?blocking=true&result=true", {"s": 3})
        )
        await asyncio.sleep(1.0)
        status, _ = await http(base, "PUT", ACTIONS + "v?overwrite=true", python(SLOW_VERSION % 2))
        assert status == 200
        status, newer = await http(base, "POST", ACTIONS + "v?blocking=true&result=true", {})
        assert (status, newer) == (200, {"version": 2})
        assert await running == (200, {"version": 1})


SLEEPY = """
import time
def main(args):
    time.sleep(0.3)
    return {"n": args["n"]}
"""


async def test_a_delete_drains_the_queue_first_and_refuses_new_invocations() -> None:
    async with api_on([], embedded_settings()) as server:
        base = server.url
        document = python(SLEEPY, limits={"concurrency": 1})
        status, _ = await http(base, "PUT", ACTIONS + "sleepy", document)
        assert status == 200
        ids = []
        for n in range(5):
            status, accepted = await http(base, "POST", ACTIONS + "sleepy", {"n": n})
            assert status == 202
            ids.append(accepted["activationId"])
        deleting = asyncio.create_task(http(base, "DELETE", ACTIONS + "sleepy"))
        await asyncio.sleep(0.2)
        status, answer = await http(base, "POST", ACTIONS + "sleepy?blocking=true", {"n": 9})
        assert status == 404, answer
        assert not deleting.done(), "five runs of 0.3 s take longer than the wait"
        assert answer["error"] == "guest/sleepy is being deleted"
        status, _ = await deleting
        assert status == 200
        for n, activation_id in enumerate(ids):
            status, result = await http(
                base, "GET", f"/api/v1/namespaces/_/activations/{activation_id}/result"
            )
            assert (status, result["result"]) == (200, {"n": n}), (
                "queued work ran before the delete"
            )
        status, _ = await http(base, "POST", ACTIONS + "sleepy?blocking=true", {"n": 9})
        assert status == 404
