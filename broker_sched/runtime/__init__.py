"""How a container runs an action's code: ``process`` (default), ``simulated``, ``docker``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from broker_sched.errors import ConfigError

if TYPE_CHECKING:
    from broker_sched.config import Settings
    from broker_sched.runtime.base import Runtime


def runtime_from_settings(settings: Settings) -> Runtime:
    """Build the runtime ``settings.runtime`` names.

    Runtimes are imported here, not at the top: ``python -m broker_sched.runtime.worker``
    imports this package, and every import it pays is part of each cold start.
    """
    if settings.runtime == "process":
        from broker_sched.runtime.process import ProcessRuntime

        return ProcessRuntime(init_timeout_s=settings.scheduler.create_timeout_s)
    if settings.runtime == "simulated":
        from broker_sched.runtime.simulated import SimulatedRuntime

        return SimulatedRuntime(settings.simulated)
    if settings.runtime == "docker":
        from broker_sched.runtime.docker import DockerRuntime

        return DockerRuntime(
            settings,
            image=settings.docker.image,
            code_paths=settings.docker.code_paths or None,
            max_concurrent_ops=settings.docker.max_concurrent_ops,
            memory_limit=settings.docker.memory_limit,
        )
    raise ConfigError(f"unknown runtime {settings.runtime!r} (known: process, simulated, docker)")
