"""A controller's shard leases, kept on the broker (see :mod:`.ownership` for the rules).

Every ``ttl_s / 4`` the keeper says it is alive on the ``controllers`` channel, counts
the controllers it heard from, renews the shards it keeps, releases those beyond its
fair share and, while under it, tries free ones when one may be free
(:func:`.ownership.should_seek`: the live controllers changed, a dead one's leases
expire within two ttls of its last beat). A controller killed with -9 renews
nothing: its leases expire on the broker ``ttl_s`` after the last renewal, and the
survivors' next round (at most ``ttl_s / 4`` later) takes them. New shards are handed to
``on_gained`` so the monitor adopts their actions at once, backlog and all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio

from broker_sched.errors import BrokerSchedError
from broker_sched.events import Timeline
from broker_sched.scheduler.ownership import (
    HeldLease,
    lease_name,
    live_peers,
    owned,
    plan_leases,
    shard_of,
    should_seek,
)
from broker_sched.topology import CONTROLLERS
from transports.base import Listener, Transport

log = logging.getLogger(__name__)

ROUNDS_PER_TTL = 4
"""Renewal rounds per lease ttl: a lease survives three missed rounds."""

PEER_EXPIRY_ROUNDS = 3
"""A controller not heard from in this many rounds no longer counts for fair shares."""

SEEK_WINDOW_TTLS = 2
"""After the live controllers change, or a take succeeds, free shards are tried every
round for this many ttls: long enough for a dead controller's leases to expire."""


class ShardLeases:
    def __init__(
        self,
        *,
        transport: Transport,
        holder: str,
        shards: int,
        ttl_s: float,
        timeline: Timeline,
        on_gained: Callable[[frozenset[int]], None],
    ) -> None:
        self.transport = transport
        self.holder = holder
        self.shards = shards
        self.ttl_s = ttl_s
        self.round_s = ttl_s / ROUNDS_PER_TTL
        self.timeline = timeline
        self.on_gained = on_gained
        self.held: dict[int, HeldLease] = {}
        self.peers: dict[str, float] = {}
        """Other controllers -> when last heard from (monotonic)."""
        self._rounds = -1
        """Rounds run, less one: the first round (0) always seeks."""
        self._alive: frozenset[str] = frozenset()
        self._seek_until_s = 0.0

    def owns(self, action: str) -> bool:
        """Whether this controller may decide for ``action`` now."""
        return shard_of(action, self.shards) in self.owned()

    def owned(self) -> frozenset[int]:
        return owned(self.held, time.monotonic(), self.ttl_s)

    def token(self, action: str) -> int | None:
        """The fencing token under which this controller decides for ``action``."""
        lease = self.held.get(shard_of(action, self.shards))
        return None if lease is None else lease.token

    def live_controllers(self) -> int:
        """Controllers heard from lately, this one included."""
        expiry_s = PEER_EXPIRY_ROUNDS * self.round_s
        return len(live_peers(self.peers, time.monotonic(), expiry_s)) + 1

    async def run(self, peers: Listener) -> None:
        """Renew and rebalance every round; hear other controllers in between."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._hear, peers)
            while True:
                try:
                    await self.transport.send(CONTROLLERS, self.holder.encode())
                    await self.round()
                except BrokerSchedError as exc:
                    log.warning("controller %s: leases not renewed: %s", self.holder, exc)
                await anyio.sleep(self.round_s)

    async def _hear(self, peers: Listener) -> None:
        while True:
            try:
                body = await peers.receive(self.round_s)
            except BrokerSchedError:
                await anyio.sleep(self.round_s)
                continue
            if body is not None and body.decode(errors="replace") != self.holder:
                self.peers[body.decode(errors="replace")] = time.monotonic()

    async def round(self) -> None:
        if self.transport.capabilities.assigns_shards:
            await self._assigned_round()
            return
        now_s = time.monotonic()
        self._rounds += 1
        alive = frozenset(live_peers(self.peers, now_s, PEER_EXPIRY_ROUNDS * self.round_s))
        if alive != self._alive:
            self._alive = alive
            self._seek_until_s = now_s + SEEK_WINDOW_TTLS * self.ttl_s
        still = owned(self.held, now_s, self.ttl_s)
        for shard in set(self.held) - still:
            del self.held[shard]
            self.timeline.record("shard_lost", str(shard), holder=self.holder)
        plan = plan_leases(
            still, holder=self.holder, shards=self.shards, controllers=self.live_controllers()
        )
        for shard in plan.release:
            del self.held[shard]
            await self.transport.release_lease(lease_name(shard), self.holder)
            self.timeline.record("shard_released", str(shard), holder=self.holder)
        for shard in plan.keep:
            await self._take(shard)
            if shard not in self.held:
                self.timeline.record("shard_lost", str(shard), holder=self.holder)
        gained: set[int] = set()
        seek = should_seek(
            room=plan.room, round_index=self._rounds, now_s=now_s, seek_until_s=self._seek_until_s
        )
        for shard in plan.candidates if seek else ():
            if len(gained) >= plan.room:
                break
            if await self._take(shard):
                gained.add(shard)
                self.timeline.record("shard_taken", str(shard), holder=self.holder)
        if gained:
            self._seek_until_s = now_s + SEEK_WINDOW_TTLS * self.ttl_s
            self.on_gained(frozenset(gained))

    async def _assigned_round(self) -> None:
        """Where the broker hands shards out (a consumer group), take what it assigns:
        the fair share is the group assignor's, not :func:`plan_leases`'s."""
        sent_s = time.monotonic()
        assigned = await self.transport.hold_shards(self.holder, self.shards, self.ttl_s)
        gained = frozenset(set(assigned) - set(self.held))
        for shard in set(self.held) - set(assigned):
            self.timeline.record("shard_lost", str(shard), holder=self.holder)
        self.held = {shard: HeldLease(token, sent_s) for shard, token in assigned.items()}
        for shard in gained:
            self.timeline.record("shard_taken", str(shard), holder=self.holder)
        if gained:
            self.on_gained(gained)

    async def _take(self, shard: int) -> bool:
        """Take or renew ``shard``; whether this controller holds it now."""
        sent_s = time.monotonic()
        try:
            token = await self.transport.acquire_lease(lease_name(shard), self.holder, self.ttl_s)
        except BrokerSchedError as exc:
            # Not known either way: a held lease stays held until its local horizon,
            # and the other shards' renewals of this round still go out.
            log.warning("controller %s: lease of shard %d: %s", self.holder, shard, exc)
            return shard in self.held
        if token is None:
            self.held.pop(shard, None)
            return False
        self.held[shard] = HeldLease(token, sent_s)
        return True

    async def release_all(self) -> None:
        """Hand every shard on at a clean stop, so successors need not wait out the ttl."""
        if self.transport.capabilities.assigns_shards:
            self.held.clear()
            await self.transport.release_shards(self.holder)
            return
        for shard in list(self.held):
            del self.held[shard]
            await self.transport.release_lease(lease_name(shard), self.holder)
