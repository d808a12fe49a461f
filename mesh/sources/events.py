"""Change events as adapters build them, and their Avro envelope."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from mesh.domain import DomainConfig, SourceSpec

TENANT_HEADER = "dictamesh.tenant"
"""Kafka header naming an event's tenant: consumers can route or filter a shared topic
without decoding (the key, the URN, says it too; the catalog trusts only key and payload)."""


class Op(StrEnum):
    """What happened to the entity."""

    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"
    SNAPSHOT = "SNAPSHOT"


@dataclass(frozen=True)
class ChangeEvent:
    """One change of one entity, before encoding.

    ``position`` is the source's monotonic position (the Directus activity id) and the
    entity version; ``after`` is the mapped record, ``None`` for deletes.
    """

    entity_type: str
    entity_id: str
    op: Op
    collection: str
    position: int
    source_timestamp: datetime | None
    after: dict[str, Any] | None
    changed_fields: tuple[str, ...] = ()
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def key(self, source: SourceSpec) -> bytes:
        """The tenant-scoped entity key: the entity's URN in the source's tenant."""
        return DomainConfig.urn(source.tenant, self.entity_type, self.entity_id).encode()

    @staticmethod
    def headers(source: SourceSpec) -> list[tuple[str, bytes]]:
        """The Kafka headers of the source's events."""
        return [(TENANT_HEADER, source.tenant.encode())]

    def envelope(self, source: SourceSpec) -> dict[str, Any]:
        """The record the entity type's Avro event schema encodes."""
        return {
            "event_id": self.event_id,
            "tenant": source.tenant,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "op": self.op.value,
            "source": {
                "system": source.kind,
                "instance": source.name,
                "collection": self.collection,
                "position": self.position,
                "timestamp": self.source_timestamp,
            },
            "occurred_at": datetime.now(UTC),
            "changed_fields": list(self.changed_fields),
            "after": self.after,
        }


@dataclass(frozen=True)
class DeadLetter:
    """Input an adapter could not turn into an event, with what is needed to act on it."""

    source: str
    collection: str
    item: str
    position: int
    error: Exception
    payload: bytes
    stage: str = "map"
