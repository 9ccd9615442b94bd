"""Shared fixtures: broker addresses, test settings, transports and throwaway queues.

Addresses are session-scoped and synchronous (a container, if any, starts once per run);
everything async is function-scoped so each test's event loop owns what it opens.
anyio's pytest plugin runs every ``async def`` test and fixture (``anyio_mode = "auto"``)
on asyncio only, a test and its fixtures in one task, so a fixture may enter a task group
or a stack that the test's teardown leaves.
``transport`` is parametrized over every backend; tests branch on
``transport.capabilities``, never on its name.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from brokers import (
    BROKERS,
    REQUIRE_ENV,
    TRANSPORTS,
    TransportFactory,
    broker_address,
    brokers_required,
    build_transport,
    settings_for,
    unreachable_transport,
    variant,
)

from broker_sched.config import Settings
from transports.base import Transport, dead_letter_queue
from transports.memory import MemoryBroker
from transports.registry import resolve


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out transport cases whose capabilities a test does not apply to.

    ``@pytest.mark.requires(partitioned=True)`` keeps only transports with that flag, so a
    conformance run lists exactly what applies and never reports a capability as skipped.
    """
    kept, dropped = [], []
    for item in items:
        marker = item.get_closest_marker("requires")
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("transport_name") if callspec is not None else None
        if marker is not None and name is not None:
            capabilities = resolve(variant(name).transport).capabilities
            if any(getattr(capabilities, flag) != want for flag, want in marker.kwargs.items()):
                dropped.append(item)
                continue
        kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under ``BROKER_SCHED_REQUIRE_BROKERS`` a skipped test fails the run: every skip
    there is a test that was meant to run and did not, whatever its reason."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not brokers_required():
        return
    skipped = [report.nodeid for report in reporter.stats.get("skipped", [])]
    if skipped and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        reporter.write_line(
            f"{len(skipped)} skipped while {REQUIRE_ENV} is set: {', '.join(skipped)}", red=True
        )


@pytest.fixture(scope="session", autouse=True)
def anyio_backend() -> str:
    """The scheduler runs on asyncio; its broker clients exist for no other backend.

    Autouse, so that anyio's plugin also runs the async fixtures of plain ``def`` tests.
    """
    return "asyncio"


ADDRESS_FIXTURES = {"kafka": "kafka_bootstrap", "redis": "redis_url", "nats": "nats_url"}


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    with broker_address(BROKERS["kafka"]) as address:
        yield address


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    with broker_address(BROKERS["redis"]) as address:
        yield address


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    with broker_address(BROKERS["nats"]) as address:
        yield address


@pytest.fixture
def broker_settings(request: pytest.FixtureRequest) -> Callable[..., Settings]:
    """``broker_settings(name, **overrides)``: test settings pointing at that broker.

    Asking for a network broker resolves (or skips on) its address fixture.
    """

    def build(name: str, **overrides: Any) -> Settings:
        fixture = ADDRESS_FIXTURES.get(variant(name).section)
        address = None if fixture is None else str(request.getfixturevalue(fixture))
        return settings_for(name, address, **overrides)

    return build


@pytest.fixture(
    params=[
        pytest.param(name, marks=() if name == "memory" else pytest.mark.broker)
        for name in TRANSPORTS
    ],
    ids=list(TRANSPORTS),
)
def transport_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def memory_broker() -> MemoryBroker:
    """One in-memory broker per test, shared by every memory client the test makes."""
    return MemoryBroker()


@pytest.fixture
async def make_transport(
    transport_name: str,
    broker_settings: Callable[..., Settings],
    memory_broker: MemoryBroker,
) -> AsyncIterator[TransportFactory]:
    async with AsyncExitStack() as stack:

        async def make(name: str | None = None, **overrides: Any) -> Transport:
            settings = broker_settings(name or transport_name, **overrides)
            return await stack.enter_async_context(build_transport(settings, memory_broker))

        yield make


@pytest.fixture
async def transport(make_transport: TransportFactory) -> Transport:
    return await make_transport()


@pytest.fixture
async def make_queue(transport: Transport) -> AsyncIterator[Callable[[], str]]:
    """``make_queue()``: a fresh queue name; the queue and its dead-letter queue are deleted
    at teardown."""
    made: list[str] = []

    def make() -> str:
        name = f"conf-{uuid.uuid4().hex[:12]}"
        made.append(name)
        return name

    yield make
    for name in made:
        await transport.delete(dead_letter_queue(name))
        await transport.delete(name)


@pytest.fixture
def queue(make_queue: Callable[[], str]) -> str:
    return make_queue()


@pytest.fixture
async def unreachable(transport_name: str) -> AsyncIterator[Transport]:
    """An unconnected ``transport_name`` client whose broker cannot be reached."""
    lost = unreachable_transport(transport_name)
    yield lost
    await lost.close()
