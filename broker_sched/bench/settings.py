"""Settings for one benchmark cell: the operator's settings plus the cell's overrides.

The base settings carry what the operator configured (broker addresses, credentials,
timings from ``--config`` and ``BROKER_SCHED_*``); a cell only overrides what the
experiment varies. Overrides are validated like any setting, so a scenario cannot run
with a knob that does not exist.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from broker_sched.config import Settings
from broker_sched.errors import ConfigError


def derive(base: Settings, overrides: Mapping[str, Any]) -> Settings:
    """``base`` with ``overrides`` merged in; a mapping merges into its section."""
    values = _merged(base.model_dump(), overrides)
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid benchmark settings: {problems}") from exc


def _merged(values: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(values)
    for key, value in overrides.items():
        current = merged.get(key)
        if isinstance(value, Mapping) and isinstance(current, dict):
            merged[key] = _merged(current, value)
        else:
            merged[key] = value
    return merged


def run_tag() -> str:
    """A short random tag that keeps each run's queues apart on a shared broker."""
    return secrets.token_hex(3)
