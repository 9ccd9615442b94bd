"""The scheduling-policy seam: what differs between `acs` and `sharding`, in one place.

A controller and an invoker each hold the side of the policy that concerns them and
never branch on its name. `acs` publishes to the action's own queue, admits or rejects
by the backlog monitor's verdict and runs that monitor; its invokers make containers on
request and let each container's proxy pull. `sharding` (the classic baseline) pushes
each activation to the queue of the invoker its hash picks and holds a slot there until
the result; its invokers run a push pool. A new policy is one more pair of classes and
one more entry in :func:`controller_side` and :data:`INVOKER_SIDES`.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from broker_sched.config import Settings
from broker_sched.errors import ConfigError, NoInvokers
from broker_sched.events import Timeline
from broker_sched.model import Action, ActivationResult, ContainerReply, Heartbeat
from broker_sched.scheduler.balancer import ShardingBalancer
from broker_sched.scheduler.cluster import ClusterView
from broker_sched.scheduler.monitor import BacklogMonitor
from broker_sched.topology import invoker_work_queue
from transports.base import Transport

if TYPE_CHECKING:
    from broker_sched.invoker.invoker import Invoker

Loop = Callable[[], Coroutine[Any, Any, None]]
"""A background loop, started in the owner's task group."""


class ControllerSide(ABC):
    """How a controller admits, routes and accounts for activations under one policy."""

    @abstractmethod
    def admit(self, action: Action) -> None:
        """Raise an :class:`~broker_sched.errors.InvocationError` to reject at once."""

    @abstractmethod
    def queue_for(self, action: Action, activation_id: str) -> str:
        """The queue this activation is published to."""

    @abstractmethod
    def on_published(self, action: Action) -> None:
        """The activation is in its queue."""

    @abstractmethod
    def on_result(self, result: ActivationResult) -> None:
        """A result arrived."""

    @abstractmethod
    def release(self, activation_id: str) -> None:
        """The invocation is over, with or without a result."""

    @abstractmethod
    def on_reply(self, reply: ContainerReply) -> None:
        """An invoker answered a container request."""

    def loops(self) -> list[Loop]:
        """Background loops the controller runs for this policy."""
        return []

    @abstractmethod
    def work_queues(self, actions: Iterable[Action], invoker_ids: Iterable[str]) -> list[str]:
        """Where activations wait under this policy (for backlog readers such as bench)."""


class InvokerSide(ABC):
    """What an invoker runs and reports under one policy."""

    @abstractmethod
    def heartbeat(self) -> Heartbeat: ...

    @abstractmethod
    def containers(self) -> int:
        """Containers this invoker holds now."""

    def loops(self) -> list[Loop]:
        return []


class AcsController(ControllerSide):
    def __init__(self, monitor: BacklogMonitor, settings: Settings) -> None:
        self.monitor = monitor
        self.settings = settings

    def admit(self, action: Action) -> None:
        self.monitor.admit(action)

    def queue_for(self, action: Action, activation_id: str) -> str:
        return self.settings.queue_name(action.namespace, action.name)

    def on_published(self, action: Action) -> None:
        self.monitor.on_invoke(action)

    def on_result(self, result: ActivationResult) -> None:
        self.monitor.on_result(result)

    def on_reply(self, reply: ContainerReply) -> None:
        self.monitor.on_reply(reply)

    def release(self, activation_id: str) -> None:
        """Nothing is held per activation: the queue is the action's own."""

    def loops(self) -> list[Loop]:
        return [self.monitor.run]

    def work_queues(self, actions: Iterable[Action], invoker_ids: Iterable[str]) -> list[str]:
        return [self.settings.queue_name(action.namespace, action.name) for action in actions]


class ShardingController(ControllerSide):
    def __init__(self, balancer: ShardingBalancer) -> None:
        self.balancer = balancer
        self._pushed: dict[str, str] = {}

    def admit(self, action: Action) -> None:
        """The classic scheduler queues at its home invoker whatever the load."""

    def on_published(self, action: Action) -> None:
        """No monitor to tell: the home invoker's pool makes containers itself."""

    def on_result(self, result: ActivationResult) -> None:
        """Slots are released by :meth:`release`, which the controller calls next."""

    def on_reply(self, reply: ContainerReply) -> None:
        """No container requests are sent under this policy."""

    def queue_for(self, action: Action, activation_id: str) -> str:
        invoker = self.balancer.acquire(action.fqn)
        if invoker is None:
            raise NoInvokers(f"no live invoker to push {action.fqn} to")
        self._pushed[activation_id] = invoker
        return invoker_work_queue(invoker)

    def release(self, activation_id: str) -> None:
        invoker = self._pushed.pop(activation_id, None)
        if invoker is not None:
            self.balancer.release(invoker)

    def work_queues(self, actions: Iterable[Action], invoker_ids: Iterable[str]) -> list[str]:
        return [invoker_work_queue(invoker_id) for invoker_id in invoker_ids]


class AcsInvoker(InvokerSide):
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
        from broker_sched.invoker.push_pool import PushPool

        self.invoker = invoker
        self.push_pool = PushPool(
            transport=invoker.transport,
            runtime=invoker.runtime,
            settings=invoker.settings,
            actions=invoker.actions,
            invoker_id=invoker.id,
            work_queue=invoker_work_queue(invoker.id),
            timeline=invoker.timeline,
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


def controller_side(
    settings: Settings,
    *,
    transport: Transport,
    actions: dict[str, Action],
    cluster: ClusterView,
    reply_channel: str,
    timeline: Timeline,
    rng: random.Random | None,
) -> ControllerSide:
    if settings.policy == "sharding":
        return ShardingController(
            ShardingBalancer(cluster, settings.invoker.slots, rng or random.Random())
        )
    monitor = BacklogMonitor(
        transport=transport,
        settings=settings,
        actions=actions,
        cluster=cluster,
        controller_reply_channel=reply_channel,
        timeline=timeline,
        rng=rng,
    )
    return AcsController(monitor, settings)


INVOKER_SIDES: dict[str, Callable[[Invoker], InvokerSide]] = {
    "acs": AcsInvoker,
    "sharding": ShardingInvoker,
}


def invoker_side(invoker: Invoker) -> InvokerSide:
    try:
        return INVOKER_SIDES[invoker.settings.policy](invoker)
    except KeyError:
        raise ConfigError(f"unknown policy {invoker.settings.policy!r}") from None
