"""Pre-warming one run of a sequence: asks for its later steps' containers in time.

The timing is :func:`~broker_sched.scheduler.prewarm.prewarm_asks`; this carries it
out against the backlog monitor, which sends the container requests as for any
other demand. A step is *reached* when the sequence invokes it. When the chain stops
before a warmed step (a step failed, the deadline passed), that container is released
``prewarm_ttl_s`` later — unless the action got work meanwhile, when it is someone
else's container by then — so a failing chain holds warmed containers for a bounded
time only. What warming cost is counted in a :class:`WarmingLedger`: the
container-seconds a warmed container waited for its step (from when it was expected
ready: the ask plus the step's cold start), or until it was released.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio

from broker_sched.config import SequenceSettings
from broker_sched.model import Action
from broker_sched.scheduler.decision import DEFAULT_COLD_START_S
from broker_sched.scheduler.monitor import BacklogMonitor
from broker_sched.scheduler.prewarm import PrewarmAsk, prewarm_asks


@dataclass(slots=True)
class WarmingLedger:
    """Totals over every run of every sequence, for ``/metrics`` and reports."""

    asked: int = 0
    """Containers asked for ahead of their step."""
    used: int = 0
    """Warmed containers whose step was reached."""
    released: int = 0
    """Warmed containers released because the chain stopped before their step."""
    wasted_s: float = 0.0
    """Container-seconds warmed containers sat ready before their step, or until released."""


@dataclass(slots=True)
class _Warmed:
    ask: PrewarmAsk
    action: Action
    request_id: str


class ChainWarmer:
    def __init__(
        self,
        *,
        monitor: BacklogMonitor,
        settings: SequenceSettings,
        sequence: str,
        steps: list[Action],
        ledger: WarmingLedger,
    ) -> None:
        self.monitor = monitor
        self.settings = settings
        self.sequence = sequence
        self.steps = steps
        self.ledger = ledger
        self.started_s = time.monotonic()
        self._reached = 0
        self._warmed: dict[int, _Warmed] = {}
        self._asking = anyio.CancelScope()

    async def ask_in_time(self) -> None:
        """Plan the asks from what the monitor knows now and make each at its time,
        until :meth:`finish` cancels those still waiting."""
        estimates = [self.monitor.estimate(step) for step in self.steps]
        asks = prewarm_asks(
            estimates,
            lead_s=self.settings.prewarm_lead_s,
            default_cold_start_s=DEFAULT_COLD_START_S,
        )
        with self._asking:
            async with anyio.create_task_group() as asking:
                for ask in asks:
                    asking.start_soon(self._ask, ask)

    def reached(self, index: int) -> None:
        """The sequence invokes step ``index`` now."""
        self._reached = index
        warmed = self._warmed.pop(index, None)
        if warmed is not None:
            self.ledger.used += 1
            self.ledger.wasted_s += self._idle_s(warmed)

    async def finish(self) -> None:
        """The sequence ended: stop asking; release what was warmed for steps not reached."""
        self._asking.cancel()
        unreached = [w for index, w in self._warmed.items() if index > self._reached]
        self._warmed.clear()
        if unreached:
            await anyio.sleep(self.settings.prewarm_ttl_s)
        for warmed in unreached:
            stats = self.monitor.stats.get(warmed.action.fqn)
            busy = stats is not None and stats.arrivals.rate_per_s(time.monotonic()) > 0
            reason = f"warmed for {self.sequence} step {warmed.ask.step + 1}, not reached"
            if not busy and await self.monitor.release(warmed.action, reason):
                self.ledger.released += 1
                self.ledger.wasted_s += self._idle_s(warmed)
            self.monitor.warmed_ready_s.pop(warmed.request_id, None)

    def _idle_s(self, warmed: _Warmed) -> float:
        """How long the warmed container has been ready (0 if it is not yet)."""
        ready_s = self.monitor.warmed_ready_s.pop(warmed.request_id, None)
        return 0.0 if ready_s is None else max(0.0, time.monotonic() - ready_s)

    async def _ask(self, ask: PrewarmAsk) -> None:
        delay_s = self.started_s + ask.at_s - time.monotonic()
        if delay_s > 0:
            await anyio.sleep(delay_s)
        if self._reached >= ask.step:
            return
        action = self.steps[ask.step]
        needed = "unknown" if ask.needed_s is None else f"{ask.needed_s:.3g}s"
        reason = f"pre-warm: {self.sequence} step {ask.step + 1}, expected at {needed}"
        request_id = await self.monitor.prewarm(action, reason)
        if request_id is not None:
            self.ledger.asked += 1
            self._warmed[ask.step] = _Warmed(ask, action, request_id)
