"""Changelog end offsets for table recovery, verified by reading.

Faust rebuilds a table partition by reading its changelog up to the end offset the broker
reports (ListOffsets). Tansu 0.6 reports the last *batch's* base offset + 1, which falls
short whenever the last batch holds several records — as it does after a writer dies
between batches. Recovery would stop early, serve stale state, and crash with Faust's
``ConsistencyError`` as soon as the local store is ahead of the reported offset. So each
reported end offset is checked by reading from it: any record found there moves it
forward. On a broker that reports exact end offsets the read finds nothing, at the cost of
one short fetch per recovery.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

import faust
from aiokafka.structs import TopicPartition
from faust.types import TP

from mesh.runtime.kafka import KafkaConnection

FETCH_WAIT_MS = 20
"""How long the broker may hold an empty fetch; an empty answer ends the check."""


async def read_end_offsets(
    kafka: KafkaConnection, reported: Mapping[TP, int | None]
) -> dict[TP, int]:
    """The true end offsets (last offset + 1) of ``reported``'s partitions."""
    ends = {tp: offset or 0 for tp, offset in reported.items()}
    if not ends:
        return ends
    consumer = kafka.consumer(
        enable_auto_commit=False,
        fetch_max_wait_ms=FETCH_WAIT_MS,
        max_partition_fetch_bytes=64 * 1024,  # only the tail matters, not the bytes in it
    )
    await consumer.start()
    try:
        by_tp = {TopicPartition(tp.topic, tp.partition): tp for tp in ends}
        consumer.assign(list(by_tp))
        for tp, offset in ends.items():
            consumer.seek(TopicPartition(tp.topic, tp.partition), offset)
        while records := await consumer.getmany(timeout_ms=500):
            for tp, messages in records.items():
                if messages:
                    ends[by_tp[tp]] = messages[-1].offset + 1
    finally:
        await consumer.stop()
    return ends


def install_verified_end_offsets(app: faust.App, kafka: KafkaConnection) -> None:
    """Make ``app``'s consumer answer ``highwaters`` (used by recovery) with read offsets."""
    consumer = app.consumer
    reported_highwaters = consumer.highwaters

    async def highwaters(self: Any, *partitions: TP) -> Mapping[TP, int]:
        return await read_end_offsets(kafka, await reported_highwaters(*partitions))

    consumer.highwaters = types.MethodType(highwaters, consumer)  # type: ignore[method-assign]
