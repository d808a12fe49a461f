"""Publishing an adapter's output: change events to their topics, failures to dead letters,
and waiting until Kafka acknowledged all of it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any

from mesh.codec import AvroEventCodec
from mesh.deadletter import dead_letter_headers
from mesh.domain import DomainConfig, SourceSpec
from mesh.errors import CodecError
from mesh.observability.tracing import inject_headers
from mesh.runtime.app import App
from mesh.runtime.kafka import TopicSender
from mesh.sources.events import ChangeEvent, DeadLetter
from mesh.sources.metrics import SourceMetrics


class EventPublisher:
    """Encodes and sends one source's events; :meth:`publish` returns once all are acked."""

    def __init__(
        self,
        app: App,
        domain: DomainConfig,
        source: SourceSpec,
        codecs: dict[str, AvroEventCodec],
        dead_letter_topic: str,
        metrics: SourceMetrics,
    ) -> None:
        self.domain = domain
        self.source = source
        self.codecs = codecs
        self.metrics = metrics
        self.topics = {name: TopicSender(app, domain.topic(name, source.tenant)) for name in codecs}
        self.dead_letters = TopicSender(app, dead_letter_topic)
        self.headers = ChangeEvent.headers(source)

    def prepare(self) -> None:
        """Register every schema now (blocking HTTP), not on the first event."""
        for codec in self.codecs.values():
            _ = codec.schema_id

    async def publish(self, events: list[ChangeEvent], dead: list[DeadLetter]) -> None:
        """Send everything, in order per entity, and wait for Kafka's acknowledgements."""
        pending: list[tuple[Awaitable[Any], str, str, str]] = []
        # The current span (the runner's publish) and the tenant, on every record.
        headers = self.headers + inject_headers(self.source.tenant)
        for event in events:
            record = event.envelope(self.source)
            try:
                value = self.codecs[event.entity_type].dumps(record)
            except CodecError as exc:
                dead.append(
                    DeadLetter(
                        self.source.name,
                        event.collection,
                        event.entity_id,
                        event.position,
                        exc,
                        json.dumps(record, default=str).encode(),
                        stage="encode",
                    )
                )
                continue
            sent = await self.topics[event.entity_type].send(event.key(self.source), value, headers)
            pending.append((sent, event.collection, event.op.value, "event"))
        for letter in dead:
            sent = await self.dead_letters.send(
                key=f"{letter.source}/{letter.collection}/{letter.item}".encode(),
                value=letter.payload,
                headers=dead_letter_headers(
                    stage=letter.stage,
                    error=letter.error,
                    context={
                        "source": letter.source,
                        "collection": letter.collection,
                        "item": letter.item,
                        "position": letter.position,
                    },
                ),
            )
            pending.append((sent, letter.collection, "", "dead"))
        await asyncio.gather(*(fut for fut, *_ in pending))
        for _, collection, op, kind in pending:
            if kind == "event":
                self.metrics.events.labels(self.source.name, collection, op).inc()
            else:
                self.metrics.dead_letters.labels(self.source.name, collection).inc()
