"""Transports are found by name through entry points, with a suggestion for typos."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from broker_sched import config
from broker_sched.config import Settings, load_settings
from broker_sched.errors import UnknownTransport
from transports.base import BackendSettings, Transport
from transports.memory import MemoryTransport
from transports.registry import available, resolve, settings_sections, transport_from_settings

BUILT_IN = ["kafka", "kafka-share", "memory", "nats", "redis"]


def test_available_lists_the_built_in_transports() -> None:
    assert set(BUILT_IN) <= set(available())
    assert available() == sorted(available())


def test_resolve_memory() -> None:
    assert resolve("memory") is MemoryTransport


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_built_in_resolves_to_a_transport_named_like_its_entry_point(name: str) -> None:
    cls = resolve(name)
    assert issubclass(cls, Transport)
    assert cls.name == name


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(UnknownTransport, match="did you mean 'kafka'") as unknown:
        resolve("kafak")
    assert unknown.value.name == "kafak"
    assert all(name in str(unknown.value) for name in BUILT_IN)


def test_unknown_name_without_a_close_match_has_no_suggestion() -> None:
    with pytest.raises(UnknownTransport) as unknown:
        resolve("zeromq")
    assert "did you mean" not in str(unknown.value)


def test_transport_from_settings_builds_an_unconnected_transport() -> None:
    settings = load_settings(max_payload_bytes=4096)
    transport = transport_from_settings(settings)
    assert isinstance(transport, MemoryTransport)
    assert transport.max_message_bytes == 4096
    assert isinstance(transport_from_settings(settings, "memory"), MemoryTransport)


def test_each_backend_registers_its_own_settings_section() -> None:
    sections = settings_sections()
    assert set(sections) == {"kafka", "memory", "nats", "redis"}
    assert resolve("kafka-share").settings_model is sections["kafka"]
    for name, model in sections.items():
        assert Settings.model_fields[name].annotation is model
        assert load_settings().section(model) == model()


class AcmeSettings(BackendSettings):
    region: str = "eu"


def test_a_third_party_backend_brings_settings_validated_like_the_built_in_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(config, "settings_sections", lambda: {"acme": AcmeSettings})
    with_acme = config._with_backend_sections(config.CoreSettings)

    assert with_acme(acme={"region": "us"}).section(AcmeSettings) == AcmeSettings(region="us")
    with pytest.raises(ValidationError, match="regoin"):
        with_acme(acme={"regoin": "us"})
