"""Sending the mirror's dead letters: the original record, with headers to act on it."""

from __future__ import annotations

import asyncio
import logging

from mesh.deadletter import dead_letter_headers
from mesh.logs import event_fields
from mesh.mirror.decode import DeadLetter
from mesh.mirror.metrics import MirrorMetrics
from mesh.runtime.kafka import AIOKafkaProducer

__all__ = ["send_dead_letters"]

log = logging.getLogger(__name__)


async def send_dead_letters(
    producer: AIOKafkaProducer, topic: str, dead: list[DeadLetter], metrics: MirrorMetrics
) -> None:
    """Send each record of ``dead`` as it arrived (key and value) with headers saying the
    stage, the error and where it came from; return once Kafka acknowledged all."""
    pending = []
    for letter in dead:
        origin = letter.origin
        metrics.errors.labels(letter.stage.removeprefix("mirror-")).inc()
        log.warning(
            "postgres mirror: %s:%d@%d to the dead-letter topic (%s): %s",
            origin.topic, origin.partition, origin.offset, letter.stage, letter.error,
            extra={"stage": letter.stage,
                   **event_fields(origin.topic, origin.partition, origin.offset, origin.key)},
        )  # fmt: skip
        headers = dead_letter_headers(
            stage=letter.stage,
            error=letter.error,
            context={"topic": origin.topic, "partition": origin.partition, "offset": origin.offset},
            keep=origin.headers,  # a replay sends them back
        )
        pending.append(await producer.send(topic, origin.value, key=origin.key, headers=headers))
    await asyncio.gather(*pending)
