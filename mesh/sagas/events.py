"""Every saga transition as an Avro event on ``sagas.dictamesh.saga_changed``.

Keyed by saga id (so one saga's events stay in order on one partition), registered in the
schema registry like every event. ``sequence`` numbers a saga's transitions from 0: a
worker that resumes a saga publishes its last transition again (it may have been persisted
but not published before a crash), so a consumer drops what it has already seen.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mesh.codec import RegistryClient
from mesh.codec.avro import AvroEventCodec
from mesh.runtime.app import App
from mesh.runtime.kafka import TopicSender
from mesh.sagas.state import SagaState

__all__ = ["SAGA_CHANGED_SCHEMA", "SAGA_CHANGED_TOPIC", "SagaEvents"]

SAGA_CHANGED_TOPIC = "sagas.dictamesh.saga_changed"

SAGA_CHANGED_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "SagaChanged",
    "namespace": "dictamesh.events",
    "doc": "One transition of a saga.",
    "fields": [
        {"name": "saga_id", "type": "string"},
        {"name": "saga_type", "type": "string"},
        {"name": "tenant", "type": "string"},
        {"name": "sequence", "type": "int", "doc": "The transition's number in its saga, from 0."},
        {"name": "event", "type": "string", "doc": "STARTED, STEP_STARTED, STEP_SUCCEEDED, ..."},
        {"name": "status", "type": "string", "doc": "The saga's status after it."},
        {"name": "step", "type": ["null", "string"], "default": None},
        {"name": "attempt", "type": "int"},
        {"name": "error", "type": ["null", "string"], "default": None},
        {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    ],
}


class SagaEvents:
    """Publishes saga transitions (each send awaited: acknowledged by Kafka)."""

    def __init__(self, app: App, registry: RegistryClient) -> None:
        self.codec = AvroEventCodec(registry, f"{SAGA_CHANGED_TOPIC}-value", SAGA_CHANGED_SCHEMA)
        self.sender = TopicSender(app, SAGA_CHANGED_TOPIC)
        self._prepared = False

    async def prepare(self) -> None:
        """Register the schema (a blocking registry call: off the event loop)."""
        await asyncio.to_thread(lambda: self.codec.schema_id)
        self._prepared = True

    def encode(self, state: SagaState, sequence: int) -> bytes:
        transition = state.history[sequence]
        return self.codec.dumps(
            {
                "saga_id": state.id,
                "saga_type": state.saga_type,
                "tenant": state.tenant,
                "sequence": sequence,
                "event": transition.event.value,
                "status": state.status.value,
                "step": transition.step,
                "attempt": transition.attempt,
                "error": transition.error,
                "at": int(transition.at * 1000),
            }
        )

    async def publish(self, state: SagaState, sequence: int | None = None) -> None:
        """Publish the transition ``sequence`` of ``state`` (default: its last)."""
        index = len(state.history) - 1 if sequence is None else sequence
        if not self._prepared:
            await self.prepare()
        sent = await self.sender.send(state.id.encode(), self.encode(state, index))
        await sent
