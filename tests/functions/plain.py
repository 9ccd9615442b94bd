"""Test functions that import nothing heavy: which thread runs them, what they print."""

from __future__ import annotations

import sys
import threading
from typing import Any


def thread(event: Any) -> dict[str, bool]:
    """Whether the handler runs in its process's main thread."""
    return {"main": threading.current_thread() is threading.main_thread()}


def chatty(event: dict[str, Any]) -> dict[str, int]:
    """Prints ``lines`` lines to stdout and one to stderr, the last without a newline."""
    lines = int(event.get("lines", 1))
    for i in range(lines):
        print(f"out {event.get('tag', '')} {i}")
    print(f"err {event.get('tag', '')}", file=sys.stderr)
    sys.stdout.write("no newline")
    return {"printed": lines}
