"""The chaos bench's pure parts: fault names, child settings, refusal reasons."""

from __future__ import annotations

import pytest

from broker_sched.bench.chaos import as_env, broker_address, parse_faults, short_reason
from broker_sched.config import load_settings
from broker_sched.errors import ConfigError


def test_faults_default_to_all_but_the_broker_kill() -> None:
    assert "broker-kill" not in parse_faults(None, "redis")
    assert "broker-kill" in parse_faults("all", "redis")
    assert parse_faults("all", "memory") == ["container-crash", "container-pause"]
    assert parse_faults("invoker-kill, broker-kill", "nats") == ["invoker-kill", "broker-kill"]


def test_an_unknown_or_inapplicable_fault_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown fault 'invoker-kil'"):
        parse_faults("invoker-kil", "redis")
    with pytest.raises(ConfigError, match="does not apply to the memory transport"):
        parse_faults("controller-kill", "memory")


def test_child_settings_round_trip_through_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = {
        "transport": "redis",
        "api": {"auth": False, "invocations_per_minute": 1000},
        "actions": [{"name": "a", "max_containers": 2}],
    }
    env = as_env(values)
    assert env["BROKER_SCHED_API__AUTH"] == "false"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.transport == "redis"
    assert settings.api.auth is False
    assert settings.api.invocations_per_minute == 1000
    assert settings.actions[0].max_containers == 2


def test_refusal_reasons_group_without_ids() -> None:
    assert short_reason(503, "redis: XADD act-01a2 Error 111 connecting") == (
        "HTTP 503 redis: XADD Error connecting"
    )
    assert short_reason(0, "") == "no answer"


def test_network_faults_apply_where_a_proxy_can_stand_in_front_of_the_broker() -> None:
    assert "invoker-net-timeout" in parse_faults("all", "nats")
    assert "controller-net-bandwidth" in parse_faults("all", "redis")
    assert not any("-net-" in f for f in parse_faults("all", "kafka"))
    assert not any("-net-" in f for f in parse_faults(None, "redis"))
    with pytest.raises(ConfigError, match="does not apply to the kafka transport"):
        parse_faults("invoker-net-latency", "kafka")


def test_a_proxied_process_gets_the_broker_address_with_the_proxy_in_its_place() -> None:
    settings = load_settings(None, redis={"url": "redis://127.0.0.1:6479/0"})
    variable, value, upstream = broker_address(settings, "redis")
    assert (variable, upstream) == ("BROKER_SCHED_REDIS__URL", "127.0.0.1:6479")
    assert value.replace(upstream, "127.0.0.1:1") == "redis://127.0.0.1:1/0"
    nats = load_settings(None, nats={"servers": "nats://127.0.0.1:4322,nats://127.0.0.1:4323"})
    assert broker_address(nats, "nats") == (
        "BROKER_SCHED_NATS__SERVERS",
        "nats://127.0.0.1:4322",
        "127.0.0.1:4322",
    )
    with pytest.raises(ConfigError, match="network faults apply to redis, nats"):
        broker_address(settings, "kafka")
