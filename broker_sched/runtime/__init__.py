"""How a container runs an action's code: ``process`` (default), ``simulated``, ``docker``."""

from __future__ import annotations

import importlib
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
        return _docker_runtime(settings)
    raise ConfigError(f"unknown runtime {settings.runtime!r} (known: process, simulated, docker)")


def _docker_runtime(settings: Settings) -> Runtime:
    """``broker_sched.runtime.docker`` must define ``DockerRuntime(settings)``."""
    from broker_sched.runtime.base import Runtime

    try:
        module = importlib.import_module("broker_sched.runtime.docker")
    except ModuleNotFoundError as exc:
        if exc.name != "broker_sched.runtime.docker":
            raise
        raise ConfigError("runtime 'docker' is not available in this installation") from exc
    runtime = module.DockerRuntime(settings)
    if not isinstance(runtime, Runtime):
        raise ConfigError("broker_sched.runtime.docker.DockerRuntime is not a Runtime")
    return runtime
