"""Ownership primitives: every backend either keeps leases (one holder at a time per
name, a fencing token that grows with each new holder, expiry on the broker) or assigns
shards through its group coordinator (each shard to one holder, a holder that leaves
handing its shards on); neither is a home-made consensus.

Every client here is its own connection, as controllers in different processes are.
The ttl is the default ``scheduler.lease_ttl_s``: a backend that sets expiry once per
store (a NATS bucket's max age) keeps the first ttl it is given.
"""

from __future__ import annotations

import asyncio
import uuid

from brokers import TransportFactory

from broker_sched.config import SchedulerSettings
from transports.base import Transport

TTL_S = SchedulerSettings().lease_ttl_s
SHARDS = 4
BOUND_S = 30.0
POLL_S = 0.1


def new_lease() -> str:
    return f"conf-{uuid.uuid4().hex[:12]}"


def test_every_backend_has_an_ownership_primitive(transport: Transport) -> None:
    capabilities = transport.capabilities
    assert capabilities.leases or capabilities.assigns_shards


async def test_a_lease_has_one_holder_until_it_is_released(
    transport: Transport, make_transport: TransportFactory
) -> None:
    if not transport.capabilities.leases:
        await shards_have_one_holder_each(transport, make_transport)
        return
    other = await make_transport()
    name = new_lease()

    first = await transport.acquire_lease(name, "alpha", TTL_S)
    assert first is not None
    assert await other.acquire_lease(name, "beta", TTL_S) is None, "held by alpha"
    renewed = await transport.acquire_lease(name, "alpha", TTL_S)
    assert renewed is not None
    assert renewed >= first, "a renewal keeps or raises the token"

    await other.release_lease(name, "beta")  # not beta's: nothing happens
    assert await other.acquire_lease(name, "beta", TTL_S) is None
    await transport.release_lease(name, "alpha")
    taken = await other.acquire_lease(name, "beta", TTL_S)
    assert taken is not None
    assert taken > renewed, "a new holder gets a larger token"
    assert await transport.acquire_lease(name, "alpha", TTL_S) is None


async def test_a_lease_not_renewed_expires_on_the_broker(
    transport: Transport, make_transport: TransportFactory
) -> None:
    if not transport.capabilities.leases:
        await shards_of_a_silent_holder_move(transport, make_transport)
        return
    other = await make_transport()
    name = new_lease()
    first = await transport.acquire_lease(name, "alpha", TTL_S)
    assert first is not None
    loop = asyncio.get_running_loop()
    taken_at = loop.time()

    token = None
    async with asyncio.timeout(BOUND_S):
        while token is None:
            token = await other.acquire_lease(name, "beta", TTL_S)
            await asyncio.sleep(0 if token else POLL_S)
    waited_s = loop.time() - taken_at
    assert token > first
    assert waited_s >= TTL_S * 0.9, f"expired after {waited_s:.2f} s, before its ttl"
    assert await transport.acquire_lease(name, "alpha", TTL_S) is None


async def test_concurrent_takers_get_one_lease(
    transport: Transport, make_transport: TransportFactory
) -> None:
    if not transport.capabilities.leases:
        return  # a group coordinator serialises joins itself: the shard tests cover it
    clients = [await make_transport() for _ in range(4)]
    name = new_lease()
    tokens = await asyncio.gather(
        *(client.acquire_lease(name, f"holder{i}", TTL_S) for i, client in enumerate(clients))
    )
    assert sum(token is not None for token in tokens) == 1, tokens


async def assigned(holders: dict[str, Transport], *, until: int) -> dict[str, dict[int, int]]:
    """Each holder's shards, polled (keeping every holder in the group) until ``until``
    holders have some and every shard is held once."""
    async with asyncio.timeout(BOUND_S):
        while True:
            held = {
                name: await client.hold_shards(name, SHARDS, TTL_S)
                for name, client in holders.items()
            }
            owners = [shard for shards in held.values() for shard in shards]
            if sum(bool(s) for s in held.values()) == until and sorted(owners) == list(
                range(SHARDS)
            ):
                return held
            await asyncio.sleep(POLL_S)


async def shards_have_one_holder_each(
    transport: Transport, make_transport: TransportFactory
) -> None:
    other = await make_transport()
    alone = await assigned({"alpha": transport}, until=1)
    assert set(alone["alpha"]) == set(range(SHARDS))
    both = await assigned({"alpha": transport, "beta": other}, until=2)
    assert not set(both["alpha"]) & set(both["beta"])
    assert min(both["beta"].values()) > max(alone["alpha"].values()), "tokens grow"
    await transport.release_shards("alpha")
    after = await assigned({"beta": other}, until=1)
    assert set(after["beta"]) == set(range(SHARDS))


async def shards_of_a_silent_holder_move(
    transport: Transport, make_transport: TransportFactory
) -> None:
    """A holder that stops calling loses its shards to the others, never closed
    cleanly (a killed one, which also stops heartbeating, is the fault suite's)."""
    silent = await make_transport()
    await assigned({"alpha": silent, "beta": transport}, until=2)
    after = await assigned({"beta": transport}, until=1)
    assert set(after["beta"]) == set(range(SHARDS))
