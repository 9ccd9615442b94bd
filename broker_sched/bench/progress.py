"""The live progress line on stderr while a benchmark runs.

On a terminal the line is redrawn in place twice a second; into a file or pipe one line
is written every few seconds instead, so a CI log stays short. ``Progress(None)`` is
silent (``--json``, tests).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TextIO

from broker_sched.bench.recorder import Recorder

TTY_REFRESH_S = 0.5
LOG_REFRESH_S = 5.0


class Progress:
    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self._tty = bool(stream is not None and stream.isatty())

    def note(self, message: str) -> None:
        """A line of its own, e.g. "cell 3/18 done: ..."."""
        if self.stream is None:
            return
        if self._tty:
            self.stream.write("\r\033[K")
        self.stream.write(message + "\n")
        self.stream.flush()

    @contextlib.asynccontextmanager
    async def showing(self, label: str, recorder: Recorder) -> AsyncIterator[None]:
        """Redraw ``label``'s progress from ``recorder`` while the block runs."""
        if self.stream is None:
            yield
            return
        task = asyncio.create_task(self._redraw(label, recorder))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if self._tty:
                self.stream.write("\r\033[K")
                self.stream.flush()

    async def _redraw(self, label: str, recorder: Recorder) -> None:
        assert self.stream is not None
        refresh_s = TTY_REFRESH_S if self._tty else LOG_REFRESH_S
        while True:
            await asyncio.sleep(refresh_s)
            line = self.line(label, recorder)
            if self._tty:
                self.stream.write("\r\033[K" + line)
            else:
                self.stream.write(line + "\n")
            self.stream.flush()

    @staticmethod
    def line(label: str, recorder: Recorder) -> str:
        now_s = recorder.now()
        recent = recorder.in_range(now_s - 1.0, now_s)
        ordered = sorted(c.latency_ms for c in recent)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] if ordered else 0.0
        phase = "warm-up" if now_s < recorder.warmup_s else "measure"
        total_s = recorder.window_end_s
        errors = sum(recorder.errors.values())
        return (
            f"{label}  {phase} {now_s:5.1f}/{total_s:.0f}s  done {len(recorder.completions)}"
            f"  {len(recent)}/s  p99 {p99:.1f} ms  errors {errors}"
        )
