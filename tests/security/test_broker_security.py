"""Broker security for real: the secured listeners `compose/native/brokers.sh` starts
beside the default ones (a Redis ACL user, NATS users per role with subject permissions,
Kafka SASL/SCRAM over TLS), their generated credentials read from the directory
``BROKER_SCHED_TEST_SECURITY`` names (``<broker>.json``).

Each secured broker must carry the whole activation path with only the rights it was
given, refuse what the user was not given, and a wrong credential must fail at once
with an error that names the setting to fix.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from broker_sched.config import Settings, load_settings
from broker_sched.errors import BrokerSchedError
from broker_sched.model import Action, ActivationResult, Status, decode
from broker_sched.stack import Stack
from transports.base import Transport
from transports.registry import transport_from_settings

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SECURITY_ENV = "BROKER_SCHED_TEST_SECURITY"
SETTINGS = {
    broker: set(type(getattr(Settings(), broker)).model_fields)
    for broker in ("redis", "kafka", "nats")
}
FAILS_WITHIN_S = 10.0


def credentials(broker: str) -> dict[str, Any]:
    directory = os.environ.get(SECURITY_ENV)
    if not directory:
        pytest.skip(f"{SECURITY_ENV} is not set (compose/native/brokers.sh up writes the files)")
    found: dict[str, Any] = json.loads((Path(directory) / f"{broker}.json").read_text())
    return found


def secured(broker: str, **changes: Any) -> Settings:
    section = {k: v for k, v in credentials(broker).items() if k in SETTINGS[broker]}
    section.update(changes)
    invoker = {"heartbeat_interval_s": 0.2, "keep_alive_s": 2.0}
    return load_settings(transport=broker, invoker=invoker, **{broker: section})


async def run_an_activation(settings: Settings) -> None:
    """Publish, schedule, run, reply, and keep and read a record, all on ``settings``."""
    action = Action(name=f"sec{uuid.uuid4().hex[:8]}", handler="broker_sched.samples:echo")
    async with Stack(settings, actions={action.fqn: action}) as stack:
        assert stack.controller is not None
        result = await stack.controller.invoke(action.name, {"x": 1}, timeout_s=60)
        assert (result.status, result.result) == (Status.SUCCESS, {"x": 1})
        kept = await kept_record(stack.transport, result.activation_id)
        assert decode(ActivationResult, kept) == result
        # As long-lived as the invoker's records, so this one is the scope's newest.
        ttl_s = settings.invoker.record_ttl_s
        await stack.transport.put_record("guest", result.activation_id, b"{}", ttl_s)
        assert await stack.transport.get_record("guest", result.activation_id) == b"{}"
        assert await stack.transport.recent_records("guest", 1) == [b"{}"]
        await stack.transport.delete(settings.queue_name("guest", action.name))


async def kept_record(transport: Transport, activation_id: str) -> bytes:
    """The invoker's record of the activation: put beside the reply, so on some
    transports readable a moment after the result came."""
    deadline_s = time.monotonic() + FAILS_WITHIN_S
    while (kept := await transport.get_record("guest", activation_id)) is None:
        assert time.monotonic() < deadline_s, "the invoker keeps the activation's record"
        await asyncio.sleep(0.1)
    return kept


async def use(transport: Transport) -> None:
    async with asyncio.timeout(FAILS_WITHIN_S):
        await transport.connect()
        await transport.ping()
        await transport.declare(f"sec-{uuid.uuid4().hex[:8]}")


async def fails_fast(settings: Settings, setting: str) -> None:
    transport = transport_from_settings(settings)
    started_s = time.monotonic()
    try:
        with pytest.raises(BrokerSchedError, match=setting.replace(".", r"\.")):
            await use(transport)
    finally:
        await transport.close()
    assert time.monotonic() - started_s < FAILS_WITHIN_S


# ------------------------------------------------------------------ redis


async def test_redis_acl_user_carries_the_activation_path() -> None:
    await run_an_activation(secured("redis"))


async def test_redis_acl_user_is_refused_what_it_does_not_need() -> None:
    from redis.asyncio import Redis
    from redis.exceptions import NoPermissionError

    given = credentials("redis")
    client = Redis.from_url(given["url"], username=given["username"], password=given["password"])
    try:
        assert await client.set("bs:r:probe", b"1", px=1000)
        for refused in (
            client.flushall(),
            client.set("not-ours", b"1"),
            client.publish("elsewhere", b"1"),
            client.config_get("*"),
            client.keys("*"),
        ):
            with pytest.raises(NoPermissionError):
                await refused
    finally:
        await client.aclose()


async def test_a_wrong_redis_password_fails_fast_naming_the_setting() -> None:
    await fails_fast(secured("redis", password="not-the-password"), "redis.password")
    await fails_fast(secured("redis", username=None, password=None), "redis.password")


# ------------------------------------------------------------------ kafka


async def test_kafka_over_sasl_scram_and_tls_carries_the_activation_path() -> None:
    settings = secured("kafka")
    assert settings.kafka.security_protocol == "SASL_SSL"
    await run_an_activation(settings)


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"sasl_password": "not-the-password"}, "kafka.sasl_password"),
        ({"sasl_username": "nobody"}, "kafka.sasl_username"),
        ({"ssl_cafile": None}, "kafka.ssl_cafile"),
        ({"security_protocol": "PLAINTEXT"}, "kafka.security_protocol"),
    ],
)
async def test_a_wrong_kafka_credential_fails_fast_naming_the_setting(
    change: dict[str, Any], setting: str
) -> None:
    await fails_fast(secured("kafka", **change), setting)


# ------------------------------------------------------------------- nats


def nats_role(role: str, **changes: Any) -> Settings:
    given = credentials("nats")
    login = {"user": given[f"{role}_user"], "password": given[f"{role}_password"]}
    return secured("nats", **{**login, **changes})


async def test_nats_controller_and_invoker_roles_carry_the_activation_path() -> None:
    action = Action(name=f"sec{uuid.uuid4().hex[:8]}", handler="broker_sched.samples:echo")
    actions = {action.fqn: action}
    async with (
        Stack(nats_role("invoker"), role="invoker", actions=actions),
        Stack(nats_role("controller"), role="controller", actions=actions) as controller,
    ):
        assert controller.controller is not None
        result = await controller.controller.invoke(action.name, {"x": 1}, timeout_s=60)
        assert (result.status, result.result) == (Status.SUCCESS, {"x": 1})
        await controller.transport.put_record("guest", result.activation_id, b"{}", 60)
        assert await controller.transport.recent_records("guest", 1) == [b"{}"]
        await controller.transport.delete(controller.settings.queue_name("guest", action.name))


async def test_nats_roles_are_refused_what_the_other_role_does() -> None:
    queue = f"sec-{uuid.uuid4().hex[:8]}"
    invoker = transport_from_settings(nats_role("invoker"))
    controller = transport_from_settings(nats_role("controller"))
    try:
        await invoker.connect()
        await controller.connect()
        await controller.declare(queue)
        await controller.publish(queue, b"work")
        for refused in (
            invoker.delete(queue),
            invoker.put_record("guest", "0001", b"{}", 60),
            controller.subscribe(queue, "workers", "controller-1"),
        ):
            with pytest.raises(BrokerSchedError):
                async with asyncio.timeout(FAILS_WITHIN_S):
                    await refused
        taker = await invoker.subscribe(queue, "workers", "invoker-1")
        [delivery] = await taker.fetch(1, timeout_s=5.0)
        assert delivery.body == b"work"
        await delivery.ack()
    finally:
        await controller.delete(queue)
        await invoker.close()
        await controller.close()


async def test_a_wrong_nats_password_fails_fast_naming_the_setting() -> None:
    await fails_fast(nats_role("invoker", password="not-the-password"), "nats.password")
