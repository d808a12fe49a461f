"""Change events for the mirror tests, valid for any domain config."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from mesh.domain import DomainConfig, FieldType

BASE = datetime(2026, 11, 1, tzinfo=UTC)


def sample_after(
    domain: DomainConfig, entity_type: str, entity_id: int, version: int
) -> dict[str, Any]:
    """A valid ``after`` record whose values depend on the id and version."""
    after: dict[str, Any] = {}
    for name, spec in domain.entities[entity_type].fields.items():
        match spec.type:
            case FieldType.STRING if name == domain.entities[entity_type].key:
                value: Any = str(entity_id)  # the key must be the event's entity_id
            case FieldType.STRING:
                value = f"{name} {entity_id} v{version} – ü"  # noqa: RUF001
            case FieldType.INTEGER | FieldType.LONG:
                value = entity_id if name == domain.entities[entity_type].key else version % 997
            case FieldType.FLOAT:
                value = version / 8
            case FieldType.BOOLEAN:
                value = version % 2 == 0
            case FieldType.DECIMAL:
                value = Decimal(version % 100_000) / 100 + Decimal("0.05")
            case FieldType.TIMESTAMP:
                value = BASE + timedelta(minutes=version, milliseconds=entity_id)
        after[name] = value
    return after


def event(
    domain: DomainConfig,
    entity_type: str,
    entity_id: int,
    version: int,
    *,
    op: str = "UPDATE",
    after: dict[str, Any] | None = None,
    tenant: str | None = None,
    **changes: Any,
) -> dict[str, Any]:
    """A change event of ``entity_type`` ``entity_id`` at ``version`` (the source position),
    of ``tenant`` (default: the domain's first)."""
    entity = domain.entities[entity_type]
    if op == "DELETE":
        record = None
    else:
        record = after or sample_after(domain, entity_type, entity_id, version)
        record.update(changes)
    return {
        "event_id": str(uuid.uuid4()),
        "tenant": tenant or domain.tenants[0],
        "entity_type": entity_type,
        "entity_id": str(entity_id),
        "op": op,
        "source": {
            "system": "directus",
            "instance": "directus",
            "collection": entity.collection,
            "position": version,
            "timestamp": BASE + timedelta(seconds=version),
        },
        "occurred_at": BASE + timedelta(seconds=version, milliseconds=5),
        "changed_fields": list(changes),
        "after": record,
    }
