"""Which controller decides for which action: shards of actions, each behind a lease.

Every controller accepts invocations for every action and publishes them itself; only
the *owner* of an action runs its backlog monitor's decisions (create, remove, evict,
scale in, throttle). Actions hash into ``shards`` shards and each shard is a lease on
the broker (:meth:`transports.base.Transport.acquire_lease`): the broker, not this
code, guarantees one holder at a time. What is here is the bookkeeping around it, as
plain functions over plain data:

* :func:`shard_of`: an action's shard, the same in every process.
* :func:`plan_leases`: which shards a controller keeps, hands on and tries to take, so
  that ``n`` live controllers end up with about ``shards / n`` each and every shard has
  a holder: each keeps at most its fair share and tries free shards while under it.
  Controllers prefer different shards (rendezvous order on their ids), so they seldom
  race for the same one.
* :func:`owned`: the shards a controller may act for *now*: a lease counts only until
  ``ttl_s * VALID_FRACTION`` after the renewal was *sent*, so a controller that cannot
  reach the broker stops deciding before the broker lets another take over (the two
  clocks only need to run at about the same rate, not agree).
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass

VALID_FRACTION = 0.8
"""A held lease is acted on for this fraction of its ttl after the renewal was sent."""


def shard_of(action: str, shards: int) -> int:
    """The shard of ``action`` (``namespace/name``): CRC-32, stable across processes."""
    return zlib.crc32(action.encode()) % shards


def lease_name(shard: int) -> str:
    return f"owner-{shard}"


def fair_share(shards: int, controllers: int) -> int:
    """The most shards one of ``controllers`` live controllers should hold."""
    return math.ceil(shards / max(1, controllers))


def preference(holder: str, shards: int) -> list[int]:
    """Shards in ``holder``'s order of preference (rendezvous hashing): different
    controllers try different shards first, and a controller's order never changes."""

    def weight(shard: int) -> bytes:
        return hashlib.blake2b(f"{holder}/{shard}".encode(), digest_size=8).digest()

    return sorted(range(shards), key=weight)


@dataclass(frozen=True, slots=True)
class LeasePlan:
    keep: tuple[int, ...]
    """Held shards to renew."""
    release: tuple[int, ...]
    """Held shards beyond the fair share, handed on (released) for another to take."""
    candidates: tuple[int, ...]
    """Shards not held, in the order to try them; stop once ``room`` are taken."""
    room: int
    """How many more shards this controller may take."""


def plan_leases(held: Collection[int], *, holder: str, shards: int, controllers: int) -> LeasePlan:
    """What ``holder`` does with its leases this round, given how many controllers
    (itself included) are alive. It keeps its most preferred held shards up to the fair
    share, so hand-overs are stable, and releases the rest."""
    share = fair_share(shards, controllers)
    order = preference(holder, shards)
    mine = [shard for shard in order if shard in held]
    keep, release = mine[:share], mine[share:]
    candidates = tuple(shard for shard in order if shard not in held)
    return LeasePlan(tuple(keep), tuple(release), candidates, max(0, share - len(keep)))


@dataclass(frozen=True, slots=True)
class HeldLease:
    token: int
    """The fencing token the broker gave for this holding."""
    sent_s: float
    """When the last successful take or renewal was sent (monotonic clock)."""


def owned(held: Mapping[int, HeldLease], now_s: float, ttl_s: float) -> frozenset[int]:
    """The shards whose leases are certainly still this controller's at ``now_s``."""
    horizon_s = ttl_s * VALID_FRACTION
    return frozenset(shard for shard, lease in held.items() if now_s - lease.sent_s < horizon_s)


SEEK_EVERY_ROUNDS = 8
"""A controller under its share tries free shards at least this often, even when
nothing suggests one is free (a lost beat could hide a departure)."""


def should_seek(*, room: int, round_index: int, now_s: float, seek_until_s: float) -> bool:
    """Whether to try shards this round: only with room under the fair share, and
    while something suggests a shard is free — the set of live controllers changed, or
    the last try took one, both of which extend ``seek_until_s`` — or every
    :data:`SEEK_EVERY_ROUNDS` rounds. A controller at rest under its share (one of three
    holds 10 of 32) then sends no refused takes most rounds."""
    if room <= 0:
        return False
    return now_s < seek_until_s or round_index % SEEK_EVERY_ROUNDS == 0


def live_peers(last_seen_s: Mapping[str, float], now_s: float, expiry_s: float) -> set[str]:
    """Controllers heard from within ``expiry_s``."""
    return {peer for peer, seen_s in last_seen_s.items() if now_s - seen_s <= expiry_s}


def gone_for(last_seen_s: Mapping[str, float], now_s: float, grace_s: float) -> list[str]:
    """Ids not heard from for ``grace_s``: their channels and queues can go (a grace
    longer than any activation's deadline, so nothing still answers on them)."""
    return sorted(peer for peer, seen_s in last_seen_s.items() if now_s - seen_s > grace_s)


CLEANER_SHARD = 0
"""The shard whose owner removes dead ids' channels and queues: one cleaner at a time."""
