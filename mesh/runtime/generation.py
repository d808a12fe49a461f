"""The fleet's generation: an id that lives in Kafka, so it goes when Kafka's state goes.

Redis outlives Kafka's state. The shared cache files its keys under the generation
(:mod:`mesh.cache.generation`), so that Kafka's state recreated (a new cluster, the
topics reset, the dev broker restarted: it keeps everything in memory) never meets
answers computed from the state before.

The generation is the first record of a one-partition topic, ``<app_id>-generation``. A
worker reads the record at the partition's lowest offset; when the partition is empty it
appends a fresh random id and reads the lowest offset again. Workers racing on an empty
topic each append one, and all of them then read the same first record: the broker's
order decides, no worker's guess. Every record has its own key, so compaction (the
topic is compacted, as every topic here that must not expire) never removes the first.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from dataclasses import dataclass

from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

from mesh.errors import MeshError
from mesh.runtime.kafka import AIOKafkaConsumer, KafkaConnection, TopicPartition

__all__ = [
    "GENERATION_TOPIC_CONFIG",
    "GenerationError",
    "GenerationTopic",
    "generation_topic",
    "read_generation",
]

GENERATION_TOPIC_CONFIG: dict[str, str | int] = {"cleanup.policy": "compact"}
"""How the generation topic is created (here, or by ``mesh topics`` where it is managed)."""

READ_TIMEOUT_S = 10.0
"""How long one attempt may take (connect, create, read, append, read again)."""

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def generation_topic(app_id: str) -> str:
    """The topic holding the fleet generation of app ``app_id``."""
    return f"{app_id}-generation"


class GenerationError(MeshError):
    """The fleet generation could not be read (Kafka unreachable, the topic missing where
    topics are managed); retriable: Kafka may come back, the topic may be created."""

    retriable = True


@dataclass(frozen=True)
class GenerationTopic:
    """Where the generation lives and whether this worker may create its topic."""

    name: str
    declare: bool
    """Create the topic when missing (``MESH_TOPIC_DECLARE``); else it must exist."""
    replication_factor: int = 1


async def read_generation(
    kafka: KafkaConnection, topic: GenerationTopic, *, timeout_s: float = READ_TIMEOUT_S
) -> str:
    """The fleet generation in ``topic``, appending a fresh one when there is none.

    Raises :class:`GenerationError` when Kafka does not answer within ``timeout_s`` or
    the topic is missing and may not be created.
    """
    try:
        async with asyncio.timeout(timeout_s):
            return await _agree(kafka, topic)
    except TimeoutError:
        raise GenerationError(
            f"Kafka did not answer within {timeout_s:.0f} s reading topic {topic.name!r}"
        ) from None
    except (KafkaError, OSError) as exc:
        raise GenerationError(f"reading topic {topic.name!r} failed: {exc!r}") from None


async def _create(kafka: KafkaConnection, topic: GenerationTopic) -> None:
    admin = kafka.admin()
    await admin.start()
    try:
        config = {k: str(v) for k, v in GENERATION_TOPIC_CONFIG.items()}
        new = NewTopic(topic.name, 1, topic.replication_factor, topic_configs=config)
        response = await admin.create_topics([new])
        for _, code, *rest in response.topic_errors:
            if code and code != TopicAlreadyExistsError.errno:
                raise for_code(code)(f"cannot create topic {topic.name!r}: {rest}")
    finally:
        await admin.close()


async def _agree(kafka: KafkaConnection, topic: GenerationTopic) -> str:
    name = topic.name
    tp = TopicPartition(name, 0)
    consumer = kafka.consumer(enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        # Looked for among all topics before anything asks for it by name: a metadata
        # request naming it may make a broker auto-create it, with the broker's default
        # partitions and no compaction.
        if name not in await consumer.topics():
            if not topic.declare:
                raise GenerationError(
                    f"topic {name!r} does not exist: with MESH_TOPIC_DECLARE=false it must "
                    "be created beforehand (`mesh topics` lists it)"
                )
            await _create(kafka, topic)
        consumer.assign([tp])
        first = await _first(consumer, tp)
        if first is None:
            producer = kafka.producer(acks="all", enable_idempotence=False)
            await producer.start()
            try:
                fresh = secrets.token_hex(8).encode()
                # Keyed by itself: compaction keeps every record, the first included.
                await (await producer.send(name, fresh, key=fresh, partition=0))
            finally:
                await producer.stop()
            first = await _first(consumer, tp)
            if first is None:  # appended and acknowledged, so this is the broker's fault
                raise GenerationError(f"topic {name!r} is empty after a write to it")
        return _generation_of(first)
    finally:
        await consumer.stop()


async def _first(consumer: AIOKafkaConsumer, tp: TopicPartition) -> bytes | None:
    """The value of the record at the partition's lowest offset; ``None`` when empty."""
    start = (await consumer.beginning_offsets([tp]))[tp]
    end = (await consumer.end_offsets([tp]))[tp]
    if end <= start:
        return None
    consumer.seek(tp, start)
    while True:  # bounded by the caller's timeout
        records = await consumer.getmany(tp, timeout_ms=500)
        for message in records.get(tp, ()):
            value: bytes | None = message.value
            return value or b""


def _generation_of(value: bytes) -> str:
    """The generation a record names: its value when it is a plain token (as written
    here), else a digest of it (a record written by something else still names one)."""
    text = value.decode(errors="replace")
    if _TOKEN.match(text):
        return text
    return hashlib.sha256(value).hexdigest()[:16]
