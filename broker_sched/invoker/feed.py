"""Invoker-scoped consumption: one group member per (invoker, action), shared by the
invoker's containers of that action (``invoker.consumption = "invoker"``).

With per-container consumption every container is its own member of the action's group:
on Kafka each scale step rebalances the group and the partition count caps the
containers; on Redis and NATS each container keeps a blocking read or pull request
open. A feed is instead the one member its invoker has for an action: it joins with the
invoker's first container of the action and leaves with the last, so membership changes
only then.

Containers still pull (nothing is pushed to a container that did not ask): a container
with free capacity waits on the feed, and one broker fetch at a time asks for what all
waiting containers can take together — never more, so work the invoker cannot start at
once stays in the queue for other invokers (bounded prefetch). What a fetch brings is
shared out among the waiting containers in the order they started waiting. Acks are the
deliveries' own: on Kafka the member commits each partition at its contiguous acked
offset, so the containers behind one member may finish a partition's records in any
order (the technique of Confluent's Parallel Consumer), and the partition count caps
members — invokers — instead of containers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import anyio

from broker_sched.invoker.pulling import Puller
from transports.base import Delivery, Subscription


@dataclass(eq=False, slots=True)
class _Waiter:
    wants: int
    got: list[Delivery] = field(default_factory=list)


class ActionFeed:
    """The invoker's member of one action's group, and the containers waiting on it."""

    def __init__(self, subscription: Subscription, who: str, on_empty: Callable[[], None]) -> None:
        """``on_empty``: called when the last container leaves, before the member does."""
        self.subscription = subscription
        self._puller = Puller(subscription, who)
        self._on_empty = on_empty
        self._waiters: list[_Waiter] = []
        self._round: anyio.Event | None = None
        """Set while a container fetches for the others; it fires when the round ends."""
        self.containers = 0
        self.fetched = 0
        """Deliveries brought in so far (tests and benchmarks read it)."""

    def join(self) -> FeedMember:
        self.containers += 1
        return FeedMember(self)

    async def leave(self) -> None:
        self.containers -= 1
        if self.containers == 0:
            self._on_empty()
            await self.subscription.close()

    async def fetch(self, wants: int, timeout_s: float) -> list[Delivery]:
        """Up to ``wants`` deliveries for one container, or none when ``timeout_s`` passes.

        One waiting container at a time fetches for all; the others wait for the end of
        its round, which serves them or lets the next one fetch. A container cancelled
        while it waits gives back what a round had already shared out to it.
        """
        waiter = _Waiter(wants)
        self._waiters.append(waiter)
        try:
            with anyio.move_on_after(timeout_s) as waiting:
                while not waiter.got:
                    if self._round is not None:
                        await self._round.wait()
                        continue
                    self._round = round_done = anyio.Event()
                    try:
                        remaining_s = waiting.deadline - anyio.current_time()
                        await self._fetch_for_waiters(max(0.0, remaining_s))
                    finally:
                        self._round = None
                        round_done.set()
        except BaseException:
            self._waiters.remove(waiter)
            with anyio.CancelScope(shield=True):
                for delivery in waiter.got:
                    await delivery.nack()
            raise
        self._waiters.remove(waiter)
        return waiter.got

    async def _fetch_for_waiters(self, timeout_s: float) -> None:
        """One broker fetch for every waiting container's free capacity, shared out in
        the order they came; nothing here awaits between the fetch and the sharing."""
        demand = sum(w.wants - len(w.got) for w in self._waiters)
        deliveries = await self._puller.fetch(demand, timeout_s)
        self.fetched += len(deliveries)
        queue = list(deliveries)
        for waiter in self._waiters:
            while queue and len(waiter.got) < waiter.wants:
                waiter.got.append(queue.pop(0))
        # A surplus is left only when a container stopped waiting during the fetch: it
        # goes back to the group rather than waiting here unrenewed.
        for delivery in queue:
            await delivery.nack()


class FeedMember(Subscription):
    """One container's handle on its invoker's feed: fetching waits on the feed, closing
    leaves it (the feed's member leaves the group with the last container)."""

    def __init__(self, feed: ActionFeed) -> None:
        self.queue = feed.subscription.queue
        self.group = feed.subscription.group
        self.member = feed.subscription.member
        self._feed = feed
        self._closed = False

    async def _fetch(self, max_messages: int, timeout_s: float) -> list[Delivery]:
        return await self._feed.fetch(max_messages, timeout_s)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._feed.leave()
