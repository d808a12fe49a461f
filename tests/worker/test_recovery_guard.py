"""Faust's recovery never hands aiokafka a partition without an offset.

The race behind it (a standby partition assigned after the recovery built its offsets, so
faust-streaming 0.15.3 keeps ``None`` for it) happens under rebalance churn and cannot be
produced on demand with the real broker: the seek is checked here with a stand-in for
the consumer that records what it is asked, next to what the real aiokafka consumer says
to ``None``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.tables.recovery import Recovery
from faust.types import TP

from mesh.runtime.recovery import install_recovery_hooks


class _AppWithoutRestore:
    """An app on which no batched restore is installed."""


class _Recovery:
    def __init__(self) -> None:
        self.app = _AppWithoutRestore()


class SeekRecorder:
    def __init__(self) -> None:
        self.asked: dict[TP, int] = {}

    async def seek_wait(self, offsets: dict[TP, int]) -> None:
        self.asked.update(offsets)


async def test_aiokafka_refuses_to_seek_to_no_offset() -> None:
    consumer = AIOKafkaConsumer()
    try:
        with pytest.raises(ValueError, match="positive integer"):
            consumer.seek(TopicPartition("t", 0), None)
    finally:
        await consumer.stop()


async def test_a_partition_without_an_offset_is_read_from_its_start() -> None:
    install_recovery_hooks()
    new, known, fresh = TP("c", 0), TP("c", 1), TP("c", 2)
    offsets: Counter[Any] = Counter({new: None, known: 41, fresh: -1})
    consumer = SeekRecorder()
    await Recovery._seek_offsets(_Recovery(), consumer, {new, known, fresh}, offsets, "standby")  # type: ignore[arg-type]
    assert consumer.asked == {new: 0, known: 41, fresh: 0}
