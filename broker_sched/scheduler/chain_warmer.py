"""Pre-warming one run of a sequence: asks for its later steps' containers in time.

The timing is :func:`~broker_sched.scheduler.prewarm.prewarm_asks`; this carries it
out against the backlog monitor, which sends the container requests as for any
other demand. A step is *reached* when the sequence invokes it; the asks not made yet
are planned again from that moment, which is known rather than estimated. An ask no
invoker had room for (or none was heard from in time) is made again every ``retry_s``
until its step is reached. When the chain stops before a warmed step (a step failed,
the deadline passed), that container is released ``prewarm_ttl_s`` later — unless the
action got work meanwhile, when it is someone else's container by then — so a failing
chain holds warmed containers for a bounded time only. What warming cost is counted
in a :class:`WarmingLedger`: the container-seconds a warmed container waited for its
step (from when it was expected ready: the ask plus the step's cold start), or until
it was released.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import anyio

from broker_sched.config import SequenceSettings
from broker_sched.model import Action
from broker_sched.scheduler.decision import DEFAULT_COLD_START_S
from broker_sched.scheduler.monitor import BacklogMonitor
from broker_sched.scheduler.prewarm import PrewarmAsk, PrewarmTiming, StepEstimate, prewarm_asks


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
        retry_s: float,
    ) -> None:
        self.monitor = monitor
        self.settings = settings
        self.sequence = sequence
        self.steps = steps
        self.ledger = ledger
        self.started_s = time.monotonic()
        self.retry_s = retry_s
        """A refused ask is made again this much later, until its step is reached."""
        self._reached = 0
        self._reached_at_s = 0.0
        self._reach = anyio.Event()
        self._warmed: dict[int, _Warmed] = {}
        self._asking = anyio.CancelScope()

    async def ask_in_time(self) -> None:
        """Make each ask at its time, planned from what the monitor knew when the
        sequence started and from the last step reached, until every ask is made or
        :meth:`finish` cancels the rest."""
        estimates = [self.monitor.estimate(step) for step in self.steps]
        timing = PrewarmTiming(
            lead_s=self.settings.prewarm_lead_s,
            quantile=self.settings.prewarm_cold_start_quantile,
            default_cold_start_s=DEFAULT_COLD_START_S,
        )
        with self._asking:
            while asks := prewarm_asks(
                estimates, timing, reached=self._reached, reached_at_s=self._reached_at_s
            ):
                due = min(asks, key=lambda ask: ask.at_s)
                if not await self._until(self.started_s + due.at_s):
                    continue
                if await self._ask(due):
                    estimates[due.step] = _asked(estimates[due.step])
                else:
                    await self._until(time.monotonic() + self.retry_s)

    def reached(self, index: int) -> None:
        """The sequence invokes step ``index`` now."""
        self._reached = index
        self._reached_at_s = time.monotonic() - self.started_s
        self._reach.set()
        self._reach = anyio.Event()
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

    async def _until(self, at_s: float) -> bool:
        """Wait until monotonic ``at_s``; False when a step was reached first, since the
        plan is then made again."""
        reach = self._reach
        with anyio.move_on_after(at_s - time.monotonic()):
            await reach.wait()
        return not reach.is_set()

    async def _ask(self, ask: PrewarmAsk) -> bool:
        """Ask for the step's container; False when no invoker had room for it (or none
        was heard from in time), to be tried again."""
        action = self.steps[ask.step]
        needed = "unknown" if ask.needed_s is None else f"{ask.needed_s:.3g}s"
        reason = f"pre-warm: {self.sequence} step {ask.step + 1}, expected at {needed}"
        request_id = await self.monitor.prewarm(action, reason)
        if request_id is None:
            return self.monitor.estimate(action).warm
        self.ledger.asked += 1
        self._warmed[ask.step] = _Warmed(ask, action, request_id)
        return True


def _asked(estimate: StepEstimate) -> StepEstimate:
    """A step whose container was asked for, or found up, has one: it is not asked for
    again."""
    return replace(estimate, warm=True)
