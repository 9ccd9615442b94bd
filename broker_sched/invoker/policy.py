"""The invoker's side of the scheduling-policy seam: what an invoker runs and reports
under `acs` or `sharding`.

Under `acs` an invoker makes containers on request and lets each container's proxy pull
from its action's queue; under `sharding` it runs a push pool on its own work queue. The
controller's side is :mod:`broker_sched.scheduler.policy`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from broker_sched.errors import ConfigError
from broker_sched.invoker.push_pool import PushPool
from broker_sched.model import Heartbeat
from broker_sched.topology import invoker_work_queue

if TYPE_CHECKING:
    from broker_sched.invoker.invoker import Invoker

Loop = Callable[[], Coroutine[Any, Any, None]]
"""A background loop, started in the invoker's task group."""


class InvokerSide(ABC):
    """What an invoker runs and reports under one policy."""

    takes_stem_cells = False
    """Whether its containers are made by container requests, which a prewarm pool serves."""

    @abstractmethod
    def heartbeat(self) -> Heartbeat: ...

    @abstractmethod
    def containers(self) -> int:
        """Containers this invoker holds now."""

    def loops(self) -> list[Loop]:
        return []


class AcsInvoker(InvokerSide):
    takes_stem_cells = True

    def __init__(self, invoker: Invoker) -> None:
        self.invoker = invoker

    def containers(self) -> int:
        return len(self.invoker.proxies)

    def heartbeat(self) -> Heartbeat:
        invoker = self.invoker
        proxies = invoker.proxies
        idle_s: dict[str, list[float]] = {}
        for proxy in proxies:
            if not proxy.busy and not proxy.leaving:
                idle_s.setdefault(proxy.action, []).append(round(proxy.idle_s, 3))
        return Heartbeat(
            invoker_id=invoker.id,
            free_slots=invoker.free_slots,
            free_memory_mb=invoker.free_memory_mb,
            containers=dict(Counter(p.action for p in proxies if not p.leaving)),
            paused=dict(Counter(p.action for p in proxies if p.paused)),
            idle_s=idle_s,
            draining=dict(invoker.drainer.remaining) if invoker.drainer is not None else {},
        )


class ShardingInvoker(InvokerSide):
    def __init__(self, invoker: Invoker) -> None:
        self.invoker = invoker
        self.push_pool = PushPool(
            transport=invoker.transport,
            runtime=invoker.runtime,
            settings=invoker.settings,
            actions=invoker.actions,
            invoker_id=invoker.id,
            work_queue=invoker_work_queue(invoker.id),
            timeline=invoker.timeline,
            metrics=invoker.metrics,
            leases=invoker.leases,
        )

    def containers(self) -> int:
        return len(self.push_pool.slots)

    def heartbeat(self) -> Heartbeat:
        pool = self.push_pool
        return Heartbeat(
            invoker_id=self.invoker.id,
            free_slots=pool.capacity - len(pool.slots),
            free_memory_mb=self.invoker.free_memory_mb,
            containers=pool.containers_by_action(),
        )

    def loops(self) -> list[Loop]:
        return [self.push_pool.serve]


INVOKER_SIDES: dict[str, Callable[[Invoker], InvokerSide]] = {
    "acs": AcsInvoker,
    "sharding": ShardingInvoker,
}


def invoker_side(invoker: Invoker) -> InvokerSide:
    try:
        return INVOKER_SIDES[invoker.settings.policy](invoker)
    except KeyError:
        raise ConfigError(f"unknown policy {invoker.settings.policy!r}") from None
