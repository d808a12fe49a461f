"""Kafka records to mirror rows: decode with the codecs, or say why not (a dead letter).

Registry look-ups are blocking HTTP calls: :meth:`MirrorDecoder.prepare` makes them in a
thread, once per schema id, before a batch is decoded, so the event loop (which also runs
the worker's Faust agents) never waits on the registry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mesh.codec import AvroEventCodec, RegistryClient, unpack
from mesh.domain import DomainConfig
from mesh.errors import CodecError, UnknownSchemaError
from mesh.mirror.rows import MirrorRow, MirrorRowError, Origin, SchemaInfo, event_row
from mesh.mirror.tables import MirrorTable

__all__ = ["DeadLetter", "MirrorDecoder"]


@dataclass(frozen=True)
class DeadLetter:
    """A record the mirror cannot apply, with the stage that failed and the error."""

    origin: Origin
    stage: str
    error: Exception


class MirrorDecoder:
    """Turns records of the entity topics into rows of the mirror tables."""

    def __init__(
        self,
        domain: DomainConfig,
        tables: Mapping[str, MirrorTable],
        codecs: Mapping[str, AvroEventCodec],
        registry: RegistryClient,
    ) -> None:
        self.domain = domain
        self.tables = tables
        self.codecs = codecs
        self.registry = registry
        self.by_topic = {topic: t for topic, t in domain.topic_types().items() if t in tables}
        self._schemas: dict[int, SchemaInfo] = {}

    @property
    def topics(self) -> list[str]:
        """The entity topics, one per entity type."""
        return list(self.by_topic)

    async def prepare(self, records: Iterable[Any]) -> None:
        """Fetch the writer schemas of ``records`` not seen before (in a thread).

        An unknown schema id is left for :meth:`decode` to dead-letter; a registry that
        cannot be reached raises :class:`~mesh.errors.RegistryError` (retriable): the
        batch is then tried again later rather than dead-lettered.
        """
        wanted: dict[int, str] = {}
        for record in records:
            try:
                schema_id, _ = unpack(record.value or b"")
            except CodecError:
                continue
            if schema_id not in self._schemas:
                wanted[schema_id] = f"{record.topic}-value"
        for schema_id, subject in wanted.items():
            info = await asyncio.to_thread(self._lookup, schema_id, subject)
            if info is not None:
                self._schemas[schema_id] = info

    def _lookup(self, schema_id: int, subject: str) -> SchemaInfo | None:
        try:
            self.registry.writer_schema(schema_id)
        except UnknownSchemaError:
            return None
        found = self.registry.subject_version(schema_id, subject=subject)
        return SchemaInfo(schema_id, *found) if found else SchemaInfo(schema_id, None, None)

    def decode(self, record: Any) -> MirrorRow | DeadLetter:
        """The row of one record, or a dead letter saying why it cannot be one."""
        origin = Origin(
            record.topic, record.partition, record.offset, record.key, record.value,
            tuple(record.headers or ()),
        )  # fmt: skip
        entity_type = self.by_topic[record.topic]
        try:
            value = record.value or b""
            schema_id, _ = unpack(value)
            schema = self._schemas.get(schema_id)
            if schema is None:
                raise UnknownSchemaError(
                    f"schema id {schema_id} is not known to the registry at "
                    f"{self.registry.url}; the message was written against another registry "
                    "or its schema was deleted"
                )
            event = self.codecs[entity_type].loads(value)
            return event_row(self.domain, self.tables[entity_type], event, schema, origin)
        except (CodecError, MirrorRowError) as exc:
            return DeadLetter(origin, "mirror-decode", exc)
