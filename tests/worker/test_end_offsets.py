"""End offsets used by table recovery are read, not taken from ListOffsets alone.

Runs against the session's real broker (Tansu), whose ListOffsets answer is the last
batch's base offset + 1: short by the rest of a multi-record batch.
"""

from __future__ import annotations

import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition
from faust.types import TP

from mesh.runtime.end_offsets import read_end_offsets
from mesh.runtime.kafka import KafkaConnection


async def _topic(broker: str, partitions: int) -> str:
    name = f"end-offsets-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


async def _send_batch(producer: AIOKafkaProducer, topic: str, partition: int, n: int) -> None:
    batch = producer.create_batch()
    for i in range(n):
        batch.append(key=b"k%d" % i, value=b"v", timestamp=None)
    await (await producer.send_batch(batch, topic, partition=partition))


async def test_a_multi_record_last_batch_is_read_to_its_end(broker: str) -> None:
    topic = await _topic(broker, 3)
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await producer.start()
    try:
        await _send_batch(producer, topic, 0, 1)
        await _send_batch(producer, topic, 0, 25)  # offsets 1..25 in one batch
        await _send_batch(producer, topic, 1, 4)  # offsets 0..3
    finally:
        await producer.stop()
    tps = [TP(topic, p) for p in range(3)]
    consumer = AIOKafkaConsumer(bootstrap_servers=broker)
    await consumer.start()
    try:
        listed = await consumer.end_offsets([TopicPartition(topic, p) for p in range(3)])
    finally:
        await consumer.stop()
    reported = {TP(tp.topic, tp.partition): offset for tp, offset in listed.items()}

    ends = await read_end_offsets(KafkaConnection([broker]), reported)

    assert ends == {tps[0]: 26, tps[1]: 4, tps[2]: 0}
    # Whatever the broker answered, the result is never short of it.
    assert all(ends[tp] >= (reported[tp] or 0) for tp in tps)


async def test_no_partitions_means_no_reads(broker: str) -> None:
    assert await read_end_offsets(KafkaConnection([broker]), {}) == {}
