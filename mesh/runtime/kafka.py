"""Kafka clients for the parts that talk to Kafka outside the worker's app (the catalog's
batch producer, the Postgres mirror's consumer group), and sending through the app."""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import RecordMetadata

__all__ = [
    "AIOKafkaConsumer",
    "AIOKafkaProducer",
    "KafkaError",
    "RecordMetadata",
    "TopicPartition",
    "TopicSender",
]


class TopicSender:
    """Sends raw bytes to one topic through the worker app's producer (the topic is
    declared with the fleet's partition count on first use)."""

    def __init__(self, app: faust.App, topic: str) -> None:
        self._topic = app.topic(topic, key_type=bytes, value_type=bytes)

    async def send(
        self, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] | None = None
    ) -> Awaitable[Any]:
        """Queue one record; the returned awaitable resolves once Kafka acknowledged it."""
        sent: Awaitable[Any] = await self._topic.send(
            key=key,
            value=value,
            key_serializer="raw",
            value_serializer="raw",
            headers=list(headers) if headers is not None else None,
        )
        return sent
