"""A timeline of what the scheduler did and why, for demos, reports and plots.

Events are appended in memory by whichever component acts (container created, removed,
partitions resized, throttle on/off, decisions with their reason) and read by the demo
and the benchmark harness. Bounded, so a long-running deployment does not grow without
limit.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    at_s: float
    kind: str
    action: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


class Timeline:
    def __init__(self, max_events: int = 100_000) -> None:
        self.events: deque[Event] = deque(maxlen=max_events)
        self.counts: Counter[str] = Counter()

    def record(self, kind: str, action: str = "", **detail: Any) -> None:
        self.events.append(Event(time.monotonic(), kind, action, detail))
        self.counts[kind] += 1

    def of_kind(self, kind: str) -> list[Event]:
        return [event for event in self.events if event.kind == kind]
