"""DescribeShareGroupOffsets (KIP-932, API key 90; v1 adds the lag of KIP-1226).

Neither aiokafka 0.14 nor confluent-kafka 2.16 has an admin call for a share group's
state, so the request is declared here with aiokafka's protocol types and sent through
its admin client, which already knows the broker and the negotiated API versions. The
schema is Kafka's ``DescribeShareGroupOffsetsRequest.json``/``Response.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)

API_KEY = 90


class _DescribeShareGroupOffsetsResponseV1(Response):  # type: ignore[misc]
    API_KEY = API_KEY
    API_VERSION = 1
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "groups",
            CompactArray(
                ("group_id", CompactString("utf-8")),
                (
                    "topics",
                    CompactArray(
                        ("topic_name", CompactString("utf-8")),
                        ("topic_id_high", Int64),
                        ("topic_id_low", Int64),
                        (
                            "partitions",
                            CompactArray(
                                ("partition_index", Int32),
                                ("start_offset", Int64),
                                ("leader_epoch", Int32),
                                ("lag", Int64),
                                ("error_code", Int16),
                                ("error_message", CompactString("utf-8")),
                                ("tags", TaggedFields),
                            ),
                        ),
                        ("tags", TaggedFields),
                    ),
                ),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _DescribeShareGroupOffsetsRequestV1(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = API_KEY
    API_VERSION = 1
    RESPONSE_TYPE = _DescribeShareGroupOffsetsResponseV1
    SCHEMA = Schema(
        (
            "groups",
            CompactArray(
                ("group_id", CompactString("utf-8")),
                (
                    "topics",
                    CompactArray(
                        ("topic_name", CompactString("utf-8")),
                        ("partitions", CompactArray(Int32)),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class DescribeShareGroupOffsets(Request[_DescribeShareGroupOffsetsRequestV1]):  # type: ignore[misc]
    API_KEY = API_KEY

    def __init__(self, group: str, topics: dict[str, int]) -> None:
        self._group = group
        self._topics = topics

    def build(
        self, request_struct_class: type[_DescribeShareGroupOffsetsRequestV1]
    ) -> _DescribeShareGroupOffsetsRequestV1:
        topics: list[tuple[str, list[int], dict[int, bytes]]] = [
            (name, list(range(count)), {}) for name, count in self._topics.items()
        ]
        return request_struct_class([(self._group, topics, {})], {})


@dataclass(frozen=True, slots=True)
class PartitionState:
    """``start_offset``: everything below is finished; ``lag``: records not yet finished
    (available or acquired), -1 when the broker has none for the partition."""

    start_offset: int
    lag: int


def partition_states(response: Any) -> tuple[int, dict[tuple[str, int], PartitionState]]:
    """The group error code and each partition's state that came without an error."""
    states: dict[tuple[str, int], PartitionState] = {}
    group_error = 0
    for _, topics, error_code, _, _ in response.groups:
        group_error = group_error or error_code
        for topic, _, _, partitions, _ in topics:
            for index, start, _, lag, code, _, _ in partitions:
                if code == 0:
                    states[(topic, index)] = PartitionState(start, lag)
    return group_error, states
