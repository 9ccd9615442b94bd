"""The controller's side of the scheduling-policy seam: what differs between `acs` and
`sharding` for a controller, in one place.

`acs` publishes to the action's own queue, admits or rejects by the backlog monitor's
verdict and runs that monitor. `sharding` (the classic baseline) pushes each activation
to the queue of the invoker its hash picks and holds a slot there until the result. The
invoker's side is :mod:`broker_sched.invoker.policy`; a new policy is one class in each
and one entry in each one's selection, and neither the controller nor the invoker
branches on a policy's name.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

from broker_sched.config import Settings
from broker_sched.errors import NoInvokers
from broker_sched.events import Timeline
from broker_sched.model import Action, ActivationResult, ContainerReply
from broker_sched.scheduler.balancer import ShardingBalancer
from broker_sched.scheduler.cluster import ClusterView
from broker_sched.scheduler.monitor import BacklogMonitor
from broker_sched.topology import invoker_work_queue
from transports.base import Transport

Loop = Callable[[], Coroutine[Any, Any, None]]
"""A background loop, started in the controller's task group."""


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
