"""The fleet generation is read from Kafka, and every reader agrees on it.

Against the session's real broker (Tansu); each test uses a topic of its own.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from mesh_tooling.dev.process import free_port

from mesh.runtime.generation import (
    GenerationError,
    GenerationTopic,
    generation_topic,
    read_generation,
)
from mesh.runtime.kafka import KafkaConnection


def _topic() -> GenerationTopic:
    return GenerationTopic(generation_topic(f"gen-{uuid.uuid4().hex[:8]}"), declare=True)


async def _records(broker: str, topic: str) -> list[bytes]:
    """Every value in partition 0 of ``topic``, in offset order."""
    tp = TopicPartition(topic, 0)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        values: list[bytes] = []
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=500)
            values += [m.value for m in batch.get(tp, [])]
        return values
    finally:
        await consumer.stop()


async def test_readers_racing_on_an_empty_topic_agree_on_the_first_record(broker: str) -> None:
    topic = _topic()
    kafka = KafkaConnection([broker])

    found = await asyncio.gather(*(read_generation(kafka, topic) for _ in range(8)))

    records = await _records(broker, topic.name)
    # Whoever appended (one reader or several), all of them read the lowest offset's.
    assert set(found) == {records[0].decode()}
    assert len(found[0]) == 16
    assert len(set(records)) == len(records)  # each racer appended an id of its own
    # Read again later: the same generation, and nothing more is appended.
    assert await read_generation(kafka, topic) == found[0]
    assert len(await _records(broker, topic.name)) == len(records)


async def test_the_first_record_wins_over_later_ones(broker: str) -> None:
    """Two racers both appended (the broker ordered them): every reader takes the first."""
    topic = _topic()
    kafka = KafkaConnection([broker])
    assert await read_generation(kafka, topic)  # creates the topic, appends the first
    first = (await _records(broker, topic.name))[0]
    producer = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
    await producer.start()
    try:
        await (await producer.send(topic.name, b"slower-racer", key=b"slower-racer", partition=0))
    finally:
        await producer.stop()

    assert await read_generation(kafka, topic) == first.decode()


async def test_the_topic_has_one_partition(broker: str) -> None:
    topic = _topic()
    await read_generation(KafkaConnection([broker]), topic)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker)
    await consumer.start()
    try:
        await consumer.topics()  # loads the metadata of every topic
        assert consumer.partitions_for_topic(topic.name) == {0}
    finally:
        await consumer.stop()


async def test_a_missing_topic_is_not_created_where_topics_are_managed(broker: str) -> None:
    name = generation_topic(f"managed-{uuid.uuid4().hex[:8]}")
    kafka = KafkaConnection([broker])
    with pytest.raises(GenerationError, match="MESH_TOPIC_DECLARE=false") as failed:
        await read_generation(kafka, GenerationTopic(name, declare=False))
    assert failed.value.retriable
    consumer = AIOKafkaConsumer(bootstrap_servers=broker)
    await consumer.start()
    try:
        assert name not in await consumer.topics()
    finally:
        await consumer.stop()


async def test_no_broker_is_a_retriable_error_not_a_guess() -> None:
    kafka = KafkaConnection([f"127.0.0.1:{free_port()}"])
    with pytest.raises(GenerationError) as failed:
        await read_generation(kafka, _topic(), timeout_s=5)
    assert failed.value.retriable
