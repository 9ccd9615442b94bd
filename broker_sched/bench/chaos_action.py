"""The action a chaos run invokes: standard library only, as a container imports it.

It returns its payload, so the observer can tie every result — even a rerun whose
caller is gone — back to the invocation (``seq``) that caused it.
"""

from __future__ import annotations

import time
from typing import Any


def tagged_sleep(payload: dict[str, Any]) -> dict[str, Any]:
    """Hold the container for ``payload["ms"]`` ms, then echo the payload."""
    time.sleep(float(payload.get("ms", 0)) / 1000)
    return payload
