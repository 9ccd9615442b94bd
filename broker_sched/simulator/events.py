"""Virtual time: a clock that jumps from one event to the next.

The simulator never sleeps. Every future happening (an arrival, a container becoming
ready, a run ending, an idle timer, a scheduler tick) is a callback filed under the
virtual time it is due; :meth:`EventQueue.run` pops them in time order and moves the
clock to each one. A counter breaks ties, so events due at the same instant run in the
order they were filed and a seeded run is reproducible bit for bit.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

Callback = Callable[[], None]


class EventQueue:
    def __init__(self) -> None:
        self.now_s = 0.0
        self._heap: list[tuple[float, int, Callback]] = []
        self._filed = 0

    def at(self, time_s: float, callback: Callback) -> None:
        """Run ``callback`` at virtual time ``time_s`` (never earlier than now)."""
        heapq.heappush(self._heap, (max(time_s, self.now_s), self._filed, callback))
        self._filed += 1

    def run(self, until_s: float) -> None:
        """Run every event due up to ``until_s``; the clock ends at ``until_s``."""
        heap = self._heap
        while heap and heap[0][0] <= until_s:
            time_s, _, callback = heapq.heappop(heap)
            self.now_s = time_s
            callback()
        self.now_s = max(self.now_s, until_s)

    def idle(self) -> bool:
        """True when nothing more is due."""
        return not self._heap
