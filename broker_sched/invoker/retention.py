"""When an idle container leaves: the keep-alive, and Knative's two retention knobs.

Each idle container leaves after ``keep_alive_s`` of idleness, unless

- its action is still within ``scale_down_delay_s`` of its last activation on this
  invoker (Knative's scale-down delay: after a burst nothing shrinks until the quiet
  has lasted that long), or
- it is the action's last container here and has been idle for less than
  ``last_container_retention_s`` (Knative's scale-to-zero retention): after a burst,
  the next one's first activations find one warm container instead of a cold start.

With both at 0 (the default) this is the plain keep-alive; ``keep_alive_s`` is the
fixed one, or the action's learned one (:class:`IdleTimes`). The rule is pure; the
invoker applies it to its proxies, marking each leaver at once so the next check sees
one container fewer and two idle containers never both leave as "not the last".
"""

from __future__ import annotations

from broker_sched.config import KeepAliveSettings, RetentionSettings
from broker_sched.scheduler.idle_windows import (
    BinShape,
    IdleHistogram,
    Windows,
    fixed_windows,
    learned_windows,
    relearn_due,
)


def may_leave(
    retention: RetentionSettings,
    *,
    keep_alive_s: float,
    idle_s: float,
    action_idle_s: float,
    others: int,
) -> bool:
    """Whether a container idle for ``idle_s`` leaves now.

    ``action_idle_s``: since any container of its action here last had work;
    ``others``: the action's other containers here that are not leaving.
    """
    if action_idle_s < retention.scale_down_delay_s:
        return False
    limit_s = keep_alive_s
    if others == 0:
        limit_s = max(limit_s, retention.last_container_retention_s)
    return idle_s >= limit_s


class IdleTimes:
    """Per action on one invoker, its idle-time histogram and the keep-alive it learned
    (``keep_alive.policy = "learned"``, :mod:`broker_sched.scheduler.idle_windows`).

    The invoker sees its containers, not the calls: it reports the newest end of a run
    of each action whenever it checks an idle container (every fetch timeout), and a
    later end than the last one reported adds the gap between the two — the idle time
    plus one run, which the histogram's bins absorb for runs much shorter than the
    gaps. Live, a pre-warm window is not acted on (nothing makes an action's container
    here ahead of a call yet): the container stays from the action's idle start to the
    end of its keep-alive window, so a learned window never cold-starts more than its
    simulated counterpart; the simulator also pre-warms.
    """

    def __init__(self, settings: KeepAliveSettings, fixed_keep_alive_s: float) -> None:
        self.settings = settings
        self.fixed_keep_alive_s = fixed_keep_alive_s
        self._shape = BinShape.of(settings)
        self._histograms: dict[str, IdleHistogram] = {}
        self._last_run_end_s: dict[str, float] = {}
        self._windows: dict[str, Windows] = {}
        self._learned_at: dict[str, int] = {}

    def observe(self, action: str, last_run_end_s: float) -> None:
        """``action``'s newest run here ended at ``last_run_end_s`` (monotonic)."""
        before_s = self._last_run_end_s.get(action)
        self._last_run_end_s[action] = last_run_end_s
        if before_s is None or last_run_end_s <= before_s:
            return
        histogram = self._histograms.get(action)
        if histogram is None:
            histogram = self._histograms[action] = IdleHistogram(self._shape)
        histogram.add(last_run_end_s - before_s)
        if relearn_due(histogram.samples, self._learned_at.get(action, 0)):
            self._learned_at[action] = histogram.samples
            self._windows[action] = learned_windows(
                histogram, self.settings, self.fixed_keep_alive_s
            )

    def windows(self, action: str) -> Windows:
        return self._windows.get(action) or fixed_windows(self.fixed_keep_alive_s)

    def keep_alive_s(self, action: str) -> float:
        """How long an idle container of ``action`` stays here (``until_s``; see above)."""
        return self.windows(action).until_s
