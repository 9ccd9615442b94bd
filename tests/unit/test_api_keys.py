"""API keys: OpenWhisk's uuid:key over basic auth, kept as digests, created on first start."""

from __future__ import annotations

import base64
import logging
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from broker_sched.api_keys import (
    Credential,
    Keyring,
    digest,
    load_keyring,
    new_auth,
    read_auth_file,
)
from broker_sched.config import ApiSettings
from broker_sched.errors import ConfigError


def basic(auth: str) -> str:
    return "Basic " + base64.b64encode(auth.encode()).decode()


def test_a_key_proves_its_namespace_and_nothing_else_does() -> None:
    keyring = Keyring([Credential("u1", "guest", digest("k1"))])

    assert keyring.namespace_for(basic("u1:k1")) == "guest"
    for header in [
        None,
        "",
        basic("u1:k2"),
        basic("u2:k1"),
        basic("u1"),
        "Bearer u1:k1",
        "Basic not-base64!",
        "Basic " + base64.b64encode(b"\xff:\xfe").decode(),
    ]:
        assert keyring.namespace_for(header) is None, header


def test_new_keys_have_openwhisk_form() -> None:
    user, _, key = new_auth().partition(":")
    assert len(user) == 36
    assert len(key) == 64
    assert new_auth() != new_auth()


def test_first_start_creates_a_key_readable_by_the_owner_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ApiSettings(keys_file=tmp_path / "keys.json", auth_file=tmp_path / "wskprops")
    with caplog.at_level(logging.WARNING):
        keyring = load_keyring(settings, "127.0.0.1:3233")

    auth = read_auth_file(tmp_path / "wskprops")
    assert auth is not None
    assert keyring.namespace_for(basic(auth)) == "guest"
    _, _, key = auth.partition(":")
    assert key not in (tmp_path / "keys.json").read_text(), "only a digest is stored"
    assert key not in caplog.text, "no secret is logged"
    assert str(tmp_path / "wskprops") in caplog.text, "the log says where the key is"
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    again = load_keyring(settings, "127.0.0.1:3233")
    assert len(again) == 1, "a second start keeps the first key"
    assert again.namespace_for(basic(auth)) == "guest"


def test_keys_from_settings_are_hashed_and_nothing_is_created(tmp_path: Path) -> None:
    settings = ApiSettings(
        keys={"team": SecretStr("u9:s3cret")},
        keys_file=tmp_path / "keys.json",
        auth_file=tmp_path / "wskprops",
    )
    keyring = load_keyring(settings, "127.0.0.1:3233")

    assert keyring.namespace_for(basic("u9:s3cret")) == "team"
    assert list(tmp_path.iterdir()) == []
    assert "s3cret" not in settings.model_dump_json()


def test_a_malformed_key_names_the_setting_without_repeating_it(tmp_path: Path) -> None:
    settings = ApiSettings(keys={"team": SecretStr("no-colon")}, keys_file=tmp_path / "k")
    with pytest.raises(ConfigError, match=r"api\.keys\.team") as raised:
        load_keyring(settings, "127.0.0.1:3233")
    assert "no-colon" not in str(raised.value)


def test_no_key_is_created_when_auth_is_off(tmp_path: Path) -> None:
    settings = ApiSettings(auth=False, keys_file=tmp_path / "k", auth_file=tmp_path / "a")
    assert len(load_keyring(settings, "127.0.0.1:3233")) == 0
    assert list(tmp_path.iterdir()) == []


def test_keys_add_writes_a_digest_and_a_client_file_and_config_shows_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from broker_sched.cli import main

    monkeypatch.setenv("BROKER_SCHED_API__KEYS_FILE", str(tmp_path / "keys.json"))
    monkeypatch.setenv("BROKER_SCHED_API__KEYS", '{"ops": "u7:plain-secret"}')
    assert main(["keys", "add", "team", str(tmp_path / "team.wskprops")]) == 0
    auth = read_auth_file(tmp_path / "team.wskprops")
    assert auth is not None
    out = capsys.readouterr().out
    assert auth.partition(":")[2] not in out, "the key is in the file, not on the screen"

    keyring = load_keyring(ApiSettings(keys_file=tmp_path / "keys.json"), "x")
    assert keyring.namespace_for(basic(auth)) == "team"
    assert main(["keys", "add", "team", str(tmp_path / "team.wskprops")]) == 2, "no overwrite"

    assert main(["config"]) == 0
    shown = capsys.readouterr().out
    assert "plain-secret" not in shown
    assert '"ops": "**********"' in shown
