"""Hypothesis strategies for change events, derived from the domain config."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from mesh.domain import DomainConfig, FieldSpec, FieldType

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamps_ms() -> st.SearchStrategy[datetime]:
    """UTC datetimes at millisecond precision (what timestamp-millis keeps)."""
    return st.integers(min_value=-(2**40), max_value=2**42).map(
        lambda ms: _EPOCH + timedelta(milliseconds=ms)
    )


def _decimals(spec: FieldSpec) -> st.SearchStrategy[Decimal]:
    assert spec.precision is not None
    assert spec.scale is not None
    bound = Decimal(10) ** (spec.precision - spec.scale) - Decimal(1).scaleb(-spec.scale)
    return st.decimals(
        min_value=-bound, max_value=bound, places=spec.scale, allow_nan=False, allow_infinity=False
    )


def field_values(spec: FieldSpec) -> st.SearchStrategy[Any]:
    """Values that fit one field of the domain config (None included when nullable)."""
    base: st.SearchStrategy[Any]
    match spec.type:
        case FieldType.STRING:
            base = st.text(max_size=200)
        case FieldType.INTEGER:
            base = st.integers(min_value=-(2**31), max_value=2**31 - 1)
        case FieldType.LONG:
            base = st.integers(min_value=-(2**63), max_value=2**63 - 1)
        case FieldType.FLOAT:
            base = st.floats(allow_nan=False)
        case FieldType.BOOLEAN:
            base = st.booleans()
        case FieldType.DECIMAL:
            base = _decimals(spec)
        case FieldType.TIMESTAMP:
            base = timestamps_ms()
    return st.none() | base if spec.nullable else base


def after_records(domain: DomainConfig, entity_type: str) -> st.SearchStrategy[dict[str, Any]]:
    """``after`` records of ``entity_type``."""
    fields = domain.entities[entity_type].fields
    return st.fixed_dictionaries({name: field_values(spec) for name, spec in fields.items()})


@st.composite
def events(draw: st.DrawFn, domain: DomainConfig, entity_type: str) -> dict[str, Any]:
    """Whole change events of ``entity_type``, deletes carrying no ``after``."""
    op = draw(st.sampled_from(["CREATE", "UPDATE", "DELETE", "SNAPSHOT"]))
    after = None if op == "DELETE" else draw(after_records(domain, entity_type))
    fields = list(domain.entities[entity_type].fields)
    return {
        "event_id": str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))),
        "tenant": domain.tenants[0],
        "entity_type": entity_type,
        "entity_id": draw(st.text(min_size=1, max_size=40)),
        "op": op,
        "source": {
            "system": "directus",
            "instance": draw(st.text(max_size=30)),
            "collection": domain.entities[entity_type].collection,
            "position": draw(st.integers(min_value=0, max_value=2**63 - 1)),
            "timestamp": draw(st.none() | timestamps_ms()),
        },
        "occurred_at": draw(timestamps_ms()),
        "changed_fields": draw(st.lists(st.sampled_from(fields), unique=True)),
        "after": after,
    }
