"""The catalog's delivery without Faust's per-message machinery: the buffer, and acks
given in bulk into the bookkeeping Faust commits from, as its own ``Consumer.ack``."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from aiokafka.structs import ConsumerRecord
from faust.transport.consumer import Consumer
from faust.types import TP, Message
from hypothesis import given
from hypothesis import strategies as st

from mesh.runtime.delivery import MessageBuffer, Subscription

TOPICS = ("invoices.directus.entity_changed", "bench-catalog-relations", "not-acked")


class FakeConsumer:
    """The part of Faust's consumer ``Consumer.ack`` reads and writes."""

    def __init__(self, committed: dict[TP, int]) -> None:
        self._acked: defaultdict[TP, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[TP, set[int]] = defaultdict(set)
        self._committed_offset: defaultdict[TP, int | None] = defaultdict(lambda: None)
        self._committed_offset.update(committed)
        self._n_acked = 0
        self._unacked_messages: set[Any] = set()
        self._waiting_for_ack = None
        self.app = SimpleNamespace(
            topics=SimpleNamespace(acks_enabled_for=lambda topic: topic != "not-acked")
        )

    def state(self) -> tuple[Any, ...]:
        return (
            {tp: list(v) for tp, v in self._acked.items() if v},
            {tp: set(v) for tp, v in self._acked_index.items() if v},
            self._n_acked,
        )


def _record(topic: str, partition: int, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, partition, offset, 0, 0, b"k", b"v", None, 1, 1, [])


def _message(record: ConsumerRecord[bytes, bytes]) -> Message:
    return Message(
        record.topic, record.partition, record.offset, 0.0, 0, [], b"k", b"v", None,
        tp=TP(record.topic, record.partition),
    )  # fmt: skip


@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from(TOPICS), st.integers(0, 2), st.integers(0, 40)),
            max_size=30,
        ),
        max_size=5,
    ),
    st.dictionaries(
        st.tuples(st.sampled_from(TOPICS), st.integers(0, 2)), st.integers(0, 20), max_size=4
    ),
)
def test_bulk_acks_keep_the_bookkeeping_faust_keeps(
    batches: list[list[tuple[str, int, int]]], committed: dict[tuple[str, int], int]
) -> None:
    """Batches acked in bulk leave the acked offsets and their count as Faust's ack of each
    message would: duplicates and offsets below the committed one are not counted."""
    committed_tps = {TP(*key): offset for key, offset in committed.items()}
    faust_side, bulk_side = FakeConsumer(committed_tps), FakeConsumer(committed_tps)
    subscription = Subscription.__new__(Subscription)
    subscription.app = SimpleNamespace(consumer=bulk_side, topics=bulk_side.app.topics)  # type: ignore[assignment]
    for batch in batches:
        records = [_record(*entry) for entry in batch]
        for record in records:
            Consumer.ack(faust_side, _message(record))  # type: ignore[arg-type]
        subscription.ack(records)
    assert bulk_side.state() == faust_side.state()


def test_the_buffer_takes_runs_up_to_its_room() -> None:
    buffer = MessageBuffer({"t"}, maxsize=5)
    assert buffer.room_left() == 5
    buffer.put_all([1, 2, 3])
    assert buffer.arrived.is_set()
    assert buffer.room.is_set()
    assert buffer.room_left() == 2
    buffer.put_all([4, 5])
    assert not buffer.room.is_set()
    assert buffer.room_left() == 0
    assert buffer.take(4) == [1, 2, 3, 4]
    assert buffer.room.is_set()
    assert buffer.room_left() == 4
