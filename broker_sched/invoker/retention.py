"""When an idle container leaves: the keep-alive, and Knative's two retention knobs.

Each idle container leaves after ``keep_alive_s`` of idleness, unless

- its action is still within ``scale_down_delay_s`` of its last activation on this
  invoker (Knative's scale-down delay: after a burst nothing shrinks until the quiet
  has lasted that long), or
- it is the action's last container here and has been idle for less than
  ``last_container_retention_s`` (Knative's scale-to-zero retention): after a burst,
  the next one's first activations find one warm container instead of a cold start.

With both at 0 (the default) this is the plain keep-alive. The rule is pure; the
invoker applies it to its proxies, marking each leaver at once so the next check sees
one container fewer and two idle containers never both leave as "not the last".
"""

from __future__ import annotations

from broker_sched.config import RetentionSettings


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
