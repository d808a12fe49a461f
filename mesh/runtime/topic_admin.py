"""Making sure a small topic of the fleet exists, without letting a broker invent it.

A metadata request naming a missing topic may make a broker auto-create it with its default
partitions and no compaction, so the topic is looked for among all topics first, and
created with its own configuration when the fleet declares its topics
(``MESH_TOPIC_DECLARE``); where topics are managed (``mesh topics``) it must exist.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from mesh.runtime.kafka import KafkaConnection


async def ensure_topic(
    kafka: KafkaConnection,
    name: str,
    *,
    partitions: int,
    config: Mapping[str, str | int],
    declare: bool,
    replication_factor: int = 1,
) -> bool:
    """True when topic ``name`` exists (created now when missing and ``declare``); False
    when it is missing and may not be created. Raises Kafka's errors."""
    consumer = kafka.consumer(enable_auto_commit=False)
    await consumer.start()
    try:
        if name in await consumer.topics():
            return True
    finally:
        await consumer.stop()
    if not declare:
        return False
    admin = kafka.admin()
    await admin.start()
    try:
        settings = {k: str(v) for k, v in config.items()}
        new = NewTopic(name, partitions, replication_factor, topic_configs=settings)
        response = await admin.create_topics([new])
        for _, code, *rest in response.topic_errors:
            if code and code != TopicAlreadyExistsError.errno:
                raise for_code(code)(f"cannot create topic {name!r}: {rest}")
    finally:
        await admin.close()
    return True
