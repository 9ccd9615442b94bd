"""The action store on every transport: what one client puts, deletes or updates,
another client of the same broker reads; and an action created through one
controller's API runs on an invoker of another process's stack."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from brokers import TransportFactory

from broker_sched.action_store import ActionStore
from broker_sched.api import Api
from broker_sched.api_keys import Credential, Keyring, digest
from broker_sched.config import Settings
from broker_sched.model import Action
from broker_sched.stack import Stack

pytestmark = pytest.mark.slow

TTL_S = 600.0
GUEST = "5e1c0b84-77a5-4b6e-9f0a-1b2c3d4e5f61:guest-secret"
KEYRING = Keyring([Credential(GUEST.split(":")[0], "guest", digest("guest-secret"))])


def call(base: str, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    auth = "Basic " + base64.b64encode(GUEST.encode()).decode()
    request = urllib.request.Request(
        base + path, data=body, method=method, headers={"Authorization": auth}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_what_one_client_stores_another_reads(make_transport: TransportFactory) -> None:
    writer = ActionStore(await make_transport(), TTL_S)
    reader = ActionStore(await make_transport(), TTL_S)
    name = f"a{secrets.token_hex(4)}"
    first = await writer.put(Action(name=name, code="def main(a): return a"))
    assert (await reader.load())[f"guest/{name}"] == first
    second = await writer.put(Action(name=name, code="def main(a): return {}"))
    assert second.revision > first.revision
    assert (await reader.load())[f"guest/{name}"] == second
    await writer.delete("guest", name)
    assert f"guest/{name}" not in await reader.load()
    await writer.keep_alive({f"guest/{name}x": Action(name=f"{name}x", revision=second.revision)})
    assert f"guest/{name}x" in await reader.load()
    await writer.delete("guest", f"{name}x")


HELLO = "def main(args):\n    return {'hello': args.get('name')}\n"


async def test_an_action_created_on_one_stack_runs_on_another_stacks_invoker(
    transport_name: str,
    broker_settings: Callable[..., Settings],
    make_transport: TransportFactory,
) -> None:
    uid = secrets.token_hex(4)
    overrides = {
        "queue_template": f"s{uid}-{{namespace}}-{{action}}",
        "invoker": {"heartbeat_interval_s": 0.3, "id": f"inv-{uid}"},
    }
    settings = broker_settings(transport_name, **overrides)
    name = f"made{uid}"
    async with (
        Stack(
            settings, role="invoker", actions={}, transport=await make_transport(**overrides)
        ) as invokers,
        Stack(
            settings, role="controller", actions={}, transport=await make_transport(**overrides)
        ) as controllers,
    ):
        assert controllers.controller is not None
        async with asyncio.timeout(30):
            await controllers.controller.cluster.wait_for_invokers({f"inv-{uid}"})
        async with await Api(controllers.controller, KEYRING).start("127.0.0.1", 0) as server:
            path = f"/api/v1/namespaces/_/actions/{name}"
            document = json.dumps({"exec": {"kind": "python:3", "code": HELLO}}).encode()
            status, created = await asyncio.to_thread(call, server.url, "PUT", path, document)
            assert status == 200, created
            put_s = time.monotonic()
            async with asyncio.timeout(30):
                # The map has no event of its own: polled, to time when it changed.
                while f"guest/{name}" not in invokers.actions:  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            print(
                f"{transport_name}: the other stack's invoker had the action "
                f"{time.monotonic() - put_s:.3f} s after the PUT "
                f"(heartbeat interval {settings.invoker.heartbeat_interval_s} s)"
            )
            status, result = await asyncio.to_thread(
                call, server.url, "POST", path + "?blocking=true&result=true", b'{"name": "there"}'
            )
            assert (status, result) == (200, {"hello": "there"})
            status, _ = await asyncio.to_thread(call, server.url, "DELETE", path)
            assert status == 200
