"""What every scenario gets: the operator's settings, the transports, the mode, and the
overhead measurement shared by all reports of one run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from broker_sched.bench.overhead import Overhead, measure_overhead
from broker_sched.bench.progress import Progress
from broker_sched.bench.settings import derive
from broker_sched.bench.workload import Policy
from broker_sched.config import Settings
from transports.base import Transport
from transports.registry import transport_from_settings


@dataclass
class BenchContext:
    base: Settings
    transports: list[str]
    quick: bool
    progress: Progress
    policy: Policy | None = None
    """Restrict scenarios that compare policies to this one."""
    _overhead: dict[str, Overhead] = field(default_factory=dict)

    def settings_for(self, transport: str, overrides: dict[str, Any] | None = None) -> Settings:
        return derive(self.base, {"transport": transport, **(overrides or {})})

    def transport(self, name: str, overrides: dict[str, Any] | None = None) -> Transport:
        """An unconnected client for ``name`` (use it with ``async with``)."""
        return transport_from_settings(self.settings_for(name, overrides))

    async def overhead(self, transport: str) -> Overhead:
        """Scheduler vs raw on ``transport``, measured once per run and shared."""
        if transport not in self._overhead:
            self._overhead[transport] = await measure_overhead(
                self.base, transport, quick=self.quick, progress=self.progress
            )
        return self._overhead[transport]
