"""Where the tests find real brokers, and how they build transports for them.

A broker's address comes from, in order: an explicit ``BROKER_SCHED_TEST_<BROKER>``
variable (checked with a TCP connect first), a throwaway container when a Docker engine
answers, or nowhere, in which case tests that need it are skipped. With
``BROKER_SCHED_REQUIRE_BROKERS=1`` (CI, ``scripts/test-all.sh``) a missing broker is a
hard failure instead, so a misconfigured run cannot pass by skipping everything.

Containers use host networking on a free loopback port: nothing is published through
Docker's port mapping, which keeps Kafka's advertised listener honest.

Settings built here use short redelivery timings so that redelivery tests finish in
seconds; everything else is the production default.
"""

from __future__ import annotations

import asyncio
import io
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol
from urllib.parse import urlsplit

import pytest

from broker_sched.config import Settings, load_settings
from broker_sched.doctor import doctor
from transports.memory import MemoryBroker, MemoryTransport
from transports.registry import transport_from_settings

if TYPE_CHECKING:
    from testcontainers.core.container import DockerContainer

    from transports.base import Transport

HOST = "127.0.0.1"
REQUIRE_ENV = "BROKER_SCHED_REQUIRE_BROKERS"


def brokers_required() -> bool:
    """CI's mode: a missing broker (or engine) is an error, never a skip."""
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


START_HINT = "start them with `bash compose/native/brokers.sh up`"
CONNECT_TIMEOUT_S = 2.0
CONTAINER_STARTUP_TIMEOUT_S = 120
USABLE_TIMEOUT_S = 90


@dataclass(frozen=True, slots=True)
class Variant:
    """A transport as the suite runs it: its entry-point name, its settings section (and
    broker), and section values that make it this variant."""

    transport: str
    section: str
    values: Mapping[str, Any]


VARIANTS = {
    "memory": Variant("memory", "memory", {}),
    "kafka": Variant("kafka", "kafka", {}),
    "kafka-848": Variant("kafka", "kafka", {"group_protocol": "consumer"}),
    "kafka-share": Variant("kafka-share", "kafka", {}),
    "redis": Variant("redis", "redis", {}),
    "nats": Variant("nats", "nats", {}),
}
"""Every way the conformance suite runs: each backend, and Kafka with each group protocol."""

TRANSPORTS = tuple(VARIANTS)


def variant(name: str) -> Variant:
    return VARIANTS.get(name, Variant(name, name, {}))


TEST_TIMINGS: dict[str, dict[str, Any]] = {
    "memory": {"ack_wait_s": 2.0},
    "redis": {"claim_min_idle_ms": 1_000},
    "nats": {"ack_wait_s": 2.0},
    "kafka": {
        "session_timeout_ms": 6_000,
        "heartbeat_interval_ms": 1_000,
        "metadata_max_age_ms": 500,
        "rebalance_timeout_ms": 6_000,
    },
}
"""Per-section overrides: redelivery after ~1-2 s instead of 30 s, quick Kafka rejoins."""

ADDRESS_FIELDS = {"kafka": "bootstrap_servers", "redis": "url", "nats": "servers"}


class TransportFactory(Protocol):
    """``make_transport``: another connected client, closed when the test ends."""

    async def __call__(self, name: str | None = None, **overrides: Any) -> Transport: ...


@dataclass(frozen=True, slots=True)
class BrokerSpec:
    name: str
    address_format: str
    default_image: str
    ready_log: str
    configure: Callable[[DockerContainer, int], DockerContainer]

    @property
    def address_env(self) -> str:
        return f"BROKER_SCHED_TEST_{self.name.upper()}"

    @property
    def image_env(self) -> str:
        return f"BROKER_SCHED_TEST_{self.name.upper()}_IMAGE"

    def address(self, port: int) -> str:
        return self.address_format.format(host=HOST, port=port)


def _kafka_container(container: DockerContainer, port: int) -> DockerContainer:
    """A single KRaft node configured like ``compose/native/brokers.sh`` configures its own."""
    controller_port = free_port()
    return container.with_envs(
        KAFKA_NODE_ID="1",
        KAFKA_PROCESS_ROLES="broker,controller",
        KAFKA_LISTENERS=f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://{HOST}:{port}",
        KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
        KAFKA_INTER_BROKER_LISTENER_NAME="PLAINTEXT",
        KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        KAFKA_CONTROLLER_QUORUM_VOTERS=f"1@{HOST}:{controller_port}",
        KAFKA_NUM_PARTITIONS="1",
        KAFKA_AUTO_CREATE_TOPICS_ENABLE="false",
        KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
        KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
        KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
        KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR="1",
        KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR="1",
        KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
    )


def _redis_container(container: DockerContainer, port: int) -> DockerContainer:
    return container.with_command(
        ["redis-server", "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no"]
    )


def _nats_container(container: DockerContainer, port: int) -> DockerContainer:
    return container.with_command(["-a", HOST, "-p", str(port), "-js", "-sd", "/tmp/nats"])


BROKERS = {
    spec.name: spec
    for spec in (
        BrokerSpec(
            "kafka", "{host}:{port}", "apache/kafka:4.3.1", "Kafka Server started", _kafka_container
        ),
        BrokerSpec(
            "redis",
            "redis://{host}:{port}/0",
            "redis:7",
            "Ready to accept connections",
            _redis_container,
        ),
        BrokerSpec("nats", "nats://{host}:{port}", "nats:2.10", "Server is ready", _nats_container),
    )
}


def free_port() -> int:
    """A loopback port nobody listens on (free when asked; good enough for one test run)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def host_port(address: str) -> tuple[str, int]:
    """``host:port`` or a URL (first server of a comma-separated list)."""
    first = address.split(",", 1)[0].strip()
    parts = urlsplit(first if "://" in first else f"//{first}")
    if parts.hostname is None or parts.port is None:
        raise ValueError(f"cannot find host and port in broker address {address!r}")
    return parts.hostname, parts.port


def reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    try:
        with socket.create_connection(host_port(address), timeout=timeout_s):
            return True
    except OSError:
        return False


def unavailable(spec: BrokerSpec, why: str) -> NoReturn:
    """Skip, or fail when the run requires real brokers."""
    message = (
        f"{spec.name} broker unavailable: {why}; {START_HINT} "
        f"and set {spec.address_env}={spec.address_format.format(host=HOST, port='<port>')}"
    )
    if brokers_required():
        pytest.fail(f"{message} ({REQUIRE_ENV} is set)", pytrace=False)
    pytest.skip(message)


def docker_available() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env()
    except Exception:  # no client library, no socket, bad DOCKER_HOST: all mean "no Docker"
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


@contextmanager
def broker_address(spec: BrokerSpec) -> Iterator[str]:
    """The address of a running ``spec`` broker for the whole block (see module docstring)."""
    explicit = os.environ.get(spec.address_env, "").strip()
    if explicit:
        if not reachable(explicit):
            unavailable(spec, f"{spec.address_env}={explicit} is not reachable")
        wait_until_usable(spec, explicit)
        yield explicit
    elif docker_available():
        with run_container(spec) as address:
            wait_until_usable(spec, address)
            yield address
    else:
        unavailable(spec, f"{spec.address_env} is not set and no Docker engine is reachable")


def wait_until_usable(spec: BrokerSpec, address: str) -> None:
    """Wait until a full round trip works, not just the port.

    A broker that has just started accepts connections before it can serve everything
    (a fresh Kafka creates its offsets topic on the first consumer group), and a test
    that happens to run first should not pay for that with a spurious failure.
    """
    settings = settings_for(spec.name, address)
    deadline = time.monotonic() + USABLE_TIMEOUT_S
    while True:
        report = io.StringIO()
        # Its own thread and loop: fixtures may be resolved while a test's loop runs.
        with ThreadPoolExecutor(1) as pool:
            passed = pool.submit(asyncio.run, doctor(settings, out=report)).result() == 0
        if passed:
            return
        if time.monotonic() > deadline:
            unavailable(spec, f"not usable after {USABLE_TIMEOUT_S} s: {report.getvalue()}")
        time.sleep(1.0)


@contextmanager
def run_container(spec: BrokerSpec) -> Iterator[str]:
    """Start ``spec``'s image on host networking; removed when the block exits.

    An image that cannot be pulled or a broker that never gets ready counts as "no
    broker" (skip, or fail under ``BROKER_SCHED_REQUIRE_BROKERS``), not as a test error.

    ``TESTCONTAINERS_RYUK_DISABLED=true`` is honoured by testcontainers itself; with Ryuk
    enabled a crashed run's containers are still reaped.
    """
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    port = free_port()
    image = os.environ.get(spec.image_env, spec.default_image)
    container = (
        spec.configure(DockerContainer(image), port)
        .with_kwargs(network_mode="host")
        .waiting_for(
            LogMessageWaitStrategy(spec.ready_log).with_startup_timeout(CONTAINER_STARTUP_TIMEOUT_S)
        )
    )
    failure = start_container(container)
    if failure is not None:
        container.stop()
        unavailable(spec, f"container {image} did not start: {failure}")
    try:
        yield spec.address(port)
    finally:
        container.stop()


def start_container(container: DockerContainer) -> str | None:
    """Start ``container``; the first line of what went wrong, or ``None`` if it is ready."""
    try:
        container.start()
    except Exception as exc:  # pull, create or readiness failed: all mean "no broker"
        first_line = next(iter(str(exc).splitlines()), type(exc).__name__)
        return first_line[:300]
    return None


def settings_for(name: str, address: str | None = None, **overrides: Any) -> Settings:
    """Test settings for transport or variant ``name``: short timings, ``address`` for its
    broker.

    A mapping given for a section (``redis={"maxlen": 10}``) is merged into that section's
    test values; anything else is a top-level setting.
    """
    which = variant(name)
    sections: dict[str, dict[str, Any]] = {key: dict(value) for key, value in TEST_TIMINGS.items()}
    sections.setdefault(which.section, {}).update(which.values)
    if address is not None:
        sections[which.section][ADDRESS_FIELDS[which.section]] = address
    values: dict[str, Any] = {"transport": which.transport}
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            sections.setdefault(key, {}).update(value)
        else:
            values[key] = value
    return load_settings(None, **sections, **values)


def closed_address(name: str) -> str:
    """An address for ``name`` where nothing listens, to test connection failures."""
    return BROKERS[variant(name).section].address(free_port())


def build_transport(settings: Settings, memory_broker: MemoryBroker) -> Transport:
    """An unconnected transport; memory clients share ``memory_broker`` like network clients
    share a broker (``from_settings`` would give each its own)."""
    if settings.transport == "memory":
        return MemoryTransport(
            memory_broker,
            ack_wait_s=settings.memory.ack_wait_s,
            max_message_bytes=settings.max_payload_bytes,
        )
    return transport_from_settings(settings)


def unreachable_transport(name: str) -> Transport:
    """An unconnected transport whose broker cannot be reached: a closed port, or for
    memory a broker with its ``down`` fault switched on."""
    if name == "memory":
        broker = MemoryBroker()
        broker.down = True
        return MemoryTransport(broker)
    return transport_from_settings(settings_for(name, closed_address(name)))
