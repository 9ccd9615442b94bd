"""Settings: defaults, then the TOML file, then the environment; unknown keys are errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker_sched.config import ENV_PREFIX, Settings, load_settings
from broker_sched.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from no ``BROKER_SCHED_*`` variables, whatever the shell exports."""
    for name in os.environ:
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broker-sched.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    settings = load_settings()
    assert settings.transport == "memory"
    assert settings.policy == "acs"
    assert settings.max_payload_bytes == 1_048_576
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.nats.servers == "nats://127.0.0.1:4222"
    assert settings.scheduler.target_wait_s == 0.1
    assert settings.invoker.keep_alive_s == 10.0
    assert settings.queue_name("guest", "echo") == "guest-echo"


def test_toml_file_sets_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'transport = "redis"\nqueue_template = "{namespace}.{action}"\n'
        "[redis]\nclaim_min_idle_ms = 500\n[scheduler]\ntarget_wait_s = 0.05\n"
        '[[actions]]\nname = "echo"\n',
    )
    settings = load_settings(path)
    assert settings.transport == "redis"
    assert settings.redis.claim_min_idle_ms == 500
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.scheduler.target_wait_s == 0.05
    assert [a.fqn for a in settings.actions] == ["guest/echo"]
    assert settings.queue_name("guest", "echo") == "guest.echo"


def test_environment_overrides_file_and_nests_sections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, 'transport = "redis"\n[kafka]\ndefault_partitions = 3\n')
    monkeypatch.setenv("BROKER_SCHED_TRANSPORT", "kafka")
    monkeypatch.setenv("BROKER_SCHED_KAFKA__BOOTSTRAP_SERVERS", "10.0.0.7:9092")

    settings = load_settings(path)
    assert settings.transport == "kafka"
    assert settings.kafka.bootstrap_servers == "10.0.0.7:9092"
    assert settings.kafka.default_partitions == 3


def test_explicit_overrides_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BROKER_SCHED_TRANSPORT", "kafka")
    assert load_settings(transport="nats").transport == "nats"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('transprt = "kafka"\n', "transprt"),
        ('[kafka]\nbootstrap_server = "x:1"\n', "kafka.bootstrap_server"),
    ],
)
def test_unknown_key_in_file_is_an_error_naming_it(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(write(tmp_path, text))


def test_invalid_value_is_an_error_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[scheduler]\ntarget_utilization = 2.0\n")
    with pytest.raises(ConfigError, match=r"scheduler\.target_utilization"):
        load_settings(path)


@pytest.mark.parametrize(
    ("name", "named_as"),
    [
        ("BROKER_SCHED_TRANSPRT", "BROKER_SCHED_TRANSPRT"),
        ("BROKER_SCHED_KAFKA__NOPE", r"kafka\.nope"),
    ],
)
def test_unknown_environment_variable_is_an_error(
    monkeypatch: pytest.MonkeyPatch, name: str, named_as: str
) -> None:
    monkeypatch.setenv(name, "1")
    with pytest.raises(ConfigError, match=named_as):
        load_settings()


@pytest.mark.parametrize(
    "name",
    ["BROKER_SCHED_REQUIRE_BROKERS", "BROKER_SCHED_STATE_DIR", "BROKER_SCHED_TEST_KAFKA"],
)
def test_harness_variables_are_not_settings(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "1")
    assert load_settings() == Settings()


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="not found"):
        load_settings(missing)


def test_secrets_do_not_leak_into_repr(tmp_path: Path) -> None:
    path = write(tmp_path, '[redis]\npassword = "hunter2"\n')
    settings = load_settings(path)
    assert "hunter2" not in repr(settings)
    assert settings.redis.password is not None
    assert settings.redis.password.get_secret_value() == "hunter2"


def test_the_old_api_record_ttl_still_sets_the_record_ttl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records moved to the invokers with their ttl: a config from before keeps working."""
    old = write(tmp_path, "[api]\nrecord_ttl_s = 120\n")
    assert load_settings(old).invoker.record_ttl_s == 120.0
    both = write(tmp_path, "[api]\nrecord_ttl_s = 120\n[invoker]\nrecord_ttl_s = 60\n")
    assert load_settings(both).invoker.record_ttl_s == 60.0, "the new key wins"
    monkeypatch.setenv("BROKER_SCHED_API__RECORD_TTL_S", "77")
    assert load_settings().invoker.record_ttl_s == 77.0
