"""Names of the queues and channels the components share, in one place.

Controllers and invokers in different processes agree on these names and nothing else,
so changing one here is a wire-compatibility change.
"""

from __future__ import annotations

HEARTBEATS = "heartbeats"
CONTROLLERS = "controllers"
"""Each controller's id, every lease round: how many share the shards."""


def invoker_control_queue(invoker_id: str) -> str:
    return f"bs-invoker-{invoker_id}"


def results_channel(controller_id: str) -> str:
    return f"results-{controller_id}"


def control_replies_channel(controller_id: str) -> str:
    return f"control-{controller_id}"


def invoker_work_queue(invoker_id: str) -> str:
    """Activations pushed to one invoker (the `sharding` baseline policy only)."""
    return f"bs-invoker-{invoker_id}-work"


def consumer_group(queue: str) -> str:
    """The group that works ``queue``: named like the queue.

    Every component that consumes a queue, or reads its backlog, is a member of this
    one group, so its backlog is the queue's work; a process that comes later (a new
    container, ``migrate move``) joins the same group and takes over what is left.
    """
    return queue
