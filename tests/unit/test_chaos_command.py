"""The chaos bench's pure parts: fault names, child settings, refusal reasons."""

from __future__ import annotations

import pytest

from broker_sched.bench.chaos import as_env, parse_faults, short_reason
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
