"""Malformed broker settings: one clear line naming the setting, before any client runs.

The clients fail on a malformed address deep inside (nats-py with an assertion from the
clean-up of a client that never connected, aiokafka with an ``int()`` error, redis-py
with a traceback or, for a database that is not a number, silently database 0).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from broker_sched.config import load_settings
from broker_sched.errors import ConfigError
from transports.base import broker_addresses
from transports.registry import transport_from_settings


def test_addresses_with_and_without_scheme_and_port() -> None:
    assert broker_addresses("s", "a:1, b:2") == [("a", 1), ("b", 2)]
    assert broker_addresses(
        "s", "nats://a,tls://b:5", schemes=("nats", "tls"), default_port=4222
    ) == [
        ("a", 4222),
        ("b", 5),
    ]
    assert broker_addresses("s", "redis://u:p,w@h:7/0", schemes=("redis",), many=False) == [
        ("h", 7)
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "nats://127.0.0.1:4522x",
            r"s: 'nats://127.0.0.1:4522x' is not nats://host\[:port\] \(bad port\)",
        ),
        ("nats://127.0.0.1:99999", "bad port"),
        ("http://h:1", "has scheme 'http'"),
        ("http//x:y:z", "is not nats://host"),
        ("", "empty"),
    ],
)
def test_a_malformed_address_names_the_setting(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        broker_addresses("s", text, schemes=("nats",), default_port=4222)


def test_a_port_is_required_without_a_default() -> None:
    with pytest.raises(ConfigError, match="s: 'h' is not host:port"):
        broker_addresses("s", "h")


MALFORMED = [
    ("nats", {"nats": {"servers": "nats://127.0.0.1:4522x"}}, "nats.servers"),
    ("nats", {"nats": {"creds_file": "/nonexistent/creds"}}, "nats.creds_file"),
    ("redis", {"redis": {"url": "redis://127.0.0.1:637x/0"}}, "redis.url"),
    ("redis", {"redis": {"url": "127.0.0.1:6379"}}, "redis.url"),
    ("redis", {"redis": {"url": "redis://127.0.0.1:6379/x"}}, "redis.url: database 'x'"),
    ("redis", {"redis": {"sentinels": "127.0.0.1:x"}}, "redis.sentinels"),
    ("kafka", {"kafka": {"bootstrap_servers": "127.0.0.1:909x"}}, "kafka.bootstrap_servers"),
    ("kafka-share", {"kafka": {"bootstrap_servers": "nope"}}, "kafka.bootstrap_servers"),
]


@pytest.mark.parametrize(("transport", "values", "setting"), MALFORMED)
def test_every_transport_refuses_a_malformed_setting(
    transport: str, values: dict[str, dict[str, str]], setting: str
) -> None:
    settings = load_settings(None, transport=transport, **values)
    with pytest.raises(ConfigError, match=setting):
        transport_from_settings(settings)


@pytest.mark.parametrize("command", [["doctor"], ["run", "--role", "invoker"]])
def test_the_cli_ends_a_malformed_nats_url_in_one_line(command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BROKER_SCHED_")}
    env |= {
        "BROKER_SCHED_TRANSPORT": "nats",
        "BROKER_SCHED_NATS__SERVERS": "nats://127.0.0.1:4522x",
    }
    done = subprocess.run(
        [sys.executable, "-m", "broker_sched.cli", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "4522x" in line]
    assert lines, done.stdout + done.stderr
    assert all("nats.servers" in line for line in lines), lines


async def test_a_client_that_never_connected_is_discarded_quietly() -> None:
    from nats.aio.client import Client

    from transports.nats_jetstream import _discard

    client = Client()
    with pytest.raises(Exception, match="invalid connect url"):
        await client.connect(["nats://127.0.0.1:4522x"], connect_timeout=1)
    await _discard(client)
