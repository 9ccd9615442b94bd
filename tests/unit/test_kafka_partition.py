"""Which partition a Kafka publish goes to, before its leader is checked."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner

from transports.kafka import choose_partition

PARTITIONS = frozenset(range(8))


@pytest.mark.parametrize("key", [b"a", b"activation-0042", b"\x00\xff" * 9])
def test_a_key_keeps_the_producers_partition(key: bytes) -> None:
    expected = DefaultPartitioner()(key, sorted(PARTITIONS), sorted(PARTITIONS))
    assert choose_partition(key, PARTITIONS, PARTITIONS, frozenset()) == expected


def test_a_key_keeps_its_partition_while_its_leader_is_down() -> None:
    """Moving a key would break per-key order; its publish is refused instead."""
    home = choose_partition(b"k", PARTITIONS, PARTITIONS, frozenset())
    assert home is not None
    assert choose_partition(b"k", PARTITIONS, PARTITIONS - {home}, frozenset({home})) == home


def test_a_keyless_message_avoids_partitions_of_unreachable_nodes() -> None:
    shunned = frozenset({0, 1, 2, 3, 4, 5})
    chosen = {choose_partition(None, PARTITIONS, PARTITIONS, shunned) for _ in range(200)}
    assert chosen == {6, 7}


def test_a_keyless_message_goes_only_where_a_leader_is_known() -> None:
    chosen = {choose_partition(None, PARTITIONS, frozenset({3}), frozenset()) for _ in range(50)}
    assert chosen == {3}


def test_no_partition_qualifies() -> None:
    assert choose_partition(None, PARTITIONS, frozenset(), frozenset()) is None
    assert choose_partition(None, PARTITIONS, PARTITIONS, PARTITIONS) is None
