"""API keys in OpenWhisk's form: ``uuid:key``, sent as HTTP basic auth (user = uuid,
password = key), which is what the ``wsk`` CLI sends.

The controller keeps only a SHA-256 digest of each key. A key is 64 random characters
(over 300 bits), so a slow password hash would buy nothing against guessing while
costing every request; a digest still means a leaked key file leaks no key. The uuid
is an identity, not a secret; the digest comparison is constant-time
(:func:`hmac.compare_digest`), and an unknown uuid is compared against a dummy digest so
it costs the same as a wrong key.

A first start with authentication on and no key configured creates one for ``guest``:
its digest goes to the keys file, the key itself to a client file in ``.wskprops`` form
(``AUTH=uuid:key``), both readable by the owner only. Only the paths are ever logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import string
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import SecretStr

from broker_sched.config import ApiSettings
from broker_sched.errors import ConfigError

log = logging.getLogger(__name__)

KEY_ALPHABET = string.ascii_letters + string.digits
KEY_LENGTH = 64
DEFAULT_NAMESPACE = "guest"
_DUMMY_DIGEST = hashlib.sha256(b"no such uuid").hexdigest()


@dataclass(frozen=True, slots=True)
class Credential:
    """What the controller stores for one key: never the key itself."""

    uuid: str
    namespace: str
    key_sha256: str


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def split_auth(auth: str) -> tuple[str, str]:
    """``uuid:key`` into its parts; a ConfigError that never repeats the secret."""
    user, sep, key = auth.partition(":")
    if not sep or not user or not key:
        raise ConfigError("an API key must have the form uuid:key")
    return user, key


def new_auth() -> str:
    key = "".join(secrets.choice(KEY_ALPHABET) for _ in range(KEY_LENGTH))
    return f"{uuid.uuid4()}:{key}"


class Keyring:
    """The keys the API accepts, by uuid."""

    def __init__(self, credentials: Iterable[Credential]) -> None:
        self._by_uuid = {credential.uuid: credential for credential in credentials}

    def __len__(self) -> int:
        return len(self._by_uuid)

    def namespace_for(self, authorization: str | None) -> str | None:
        """The namespace an ``Authorization: Basic …`` header proves, or None."""
        user, key = _basic(authorization)
        if user is None or key is None:
            return None
        credential = self._by_uuid.get(user)
        expected = credential.key_sha256 if credential else _DUMMY_DIGEST
        if hmac.compare_digest(digest(key), expected) and credential is not None:
            return credential.namespace
        return None


def _basic(authorization: str | None) -> tuple[str | None, str | None]:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, key = decoded.partition(":")
    return (user, key) if sep else (None, None)


def default_dir() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "broker-sched"


def keys_path(settings: ApiSettings) -> Path:
    return settings.keys_file or default_dir() / "api-keys.json"


def auth_path(settings: ApiSettings) -> Path:
    return settings.auth_file or default_dir() / "wskprops"


def from_settings(keys: Mapping[str, SecretStr]) -> list[Credential]:
    credentials = []
    for namespace, secret in keys.items():
        try:
            user, key = split_auth(secret.get_secret_value())
        except ConfigError as exc:
            raise ConfigError(f"api.keys.{namespace}: {exc}") from None
        credentials.append(Credential(user, namespace, digest(key)))
    return credentials


def read_keys_file(path: Path) -> list[Credential]:
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text())["keys"]
        return [Credential(e["uuid"], e["namespace"], e["key_sha256"]) for e in entries]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"api.keys_file: {path} is not a keys file ({type(exc).__name__})"
        ) from None


def add_key(path: Path, namespace: str, auth: str) -> Credential:
    """Append the digest of ``auth`` to the keys file, created owner-only."""
    user, key = split_auth(auth)
    credential = Credential(user, namespace, digest(key))
    entries = [asdict(c) for c in read_keys_file(path)] + [asdict(credential)]
    _write_private(path, json.dumps({"keys": entries}, indent=2) + "\n")
    return credential


def write_auth_file(path: Path, auth: str, api: str, namespace: str) -> None:
    _write_private(path, f"APIHOST={api}\nAUTH={auth}\nNAMESPACE={namespace}\n")


def read_auth_file(path: Path) -> str | None:
    """The AUTH of a ``.wskprops``-style file, or None when there is none."""
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and name.strip() == "AUTH":
            return value.strip()
    return None


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = path.with_name(path.name + ".tmp")
    descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    staging.replace(path)


def load_keyring(settings: ApiSettings, api: str) -> Keyring:
    """The configured keys; on a first start with none, a new key for ``guest``."""
    credentials = from_settings(settings.keys) + read_keys_file(keys_path(settings))
    if credentials or not settings.auth:
        return Keyring(credentials)
    auth = new_auth()
    credential = add_key(keys_path(settings), DEFAULT_NAMESPACE, auth)
    write_auth_file(auth_path(settings), auth, api, DEFAULT_NAMESPACE)
    log.warning(
        "no API key was configured: created one for namespace %r; its digest is in %s, "
        "the key for clients in %s",
        DEFAULT_NAMESPACE,
        keys_path(settings),
        auth_path(settings),
    )
    return Keyring([credential])
