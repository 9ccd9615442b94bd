"""Names of the queues and channels the components share, in one place.

Controllers and invokers in different processes agree on these names and nothing else,
so changing one here is a wire-compatibility change.
"""

from __future__ import annotations

HEARTBEATS = "heartbeats"


def invoker_control_queue(invoker_id: str) -> str:
    return f"bs-invoker-{invoker_id}"


def results_channel(controller_id: str) -> str:
    return f"results-{controller_id}"


def control_replies_channel(controller_id: str) -> str:
    return f"control-{controller_id}"


def invoker_work_queue(invoker_id: str) -> str:
    """Activations pushed to one invoker (the `sharding` baseline policy only)."""
    return f"bs-invoker-{invoker_id}-work"
