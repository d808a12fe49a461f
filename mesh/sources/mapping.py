"""Map a source item (JSON as the source returns it) onto an entity's Avro ``after`` record.

Every value is checked against its field's declared type; anything that does not fit
raises :class:`~mesh.errors.SourceDataError` naming the field and the value, so the item
goes to the dead-letter topic instead of stopping the feed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from mesh.domain import EntitySpec, FieldSpec, FieldType
from mesh.errors import SourceDataError

_INT_BOUNDS = {FieldType.INTEGER: 2**31, FieldType.LONG: 2**63}


def _integer(spec: FieldSpec, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(value, str):
        value = int(value.strip())
    if not isinstance(value, int):
        raise ValueError(f"expected an integer, got {type(value).__name__}")
    bound = _INT_BOUNDS[spec.type]
    if not -bound <= value < bound:
        raise ValueError(f"{value} is out of range for a {spec.type.value}")
    return value


def _decimal(spec: FieldSpec, value: Any) -> Decimal:
    assert spec.precision is not None
    assert spec.scale is not None
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError(f"expected a decimal, got {type(value).__name__}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a number") from None
    if not number.is_finite():
        raise ValueError(f"{value!r} is not a finite number")
    quantized = number.quantize(Decimal(1).scaleb(-spec.scale))
    if quantized != number:
        raise ValueError(f"{value} has more than {spec.scale} decimal places")
    if len(quantized.as_tuple().digits) > spec.precision:
        raise ValueError(f"{value} has more than {spec.precision} digits")
    return quantized


def _timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO-8601 timestamp, got {type(value).__name__}")
    parsed = datetime.fromisoformat(value)
    # A timestamp without an offset is UTC: that is how Directus stores and returns them.
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def map_value(spec: FieldSpec, value: Any) -> Any:
    """``value`` converted to what the field's Avro type holds; raises ``ValueError``."""
    if value is None:
        if not spec.nullable:
            raise ValueError("null is not allowed (the field is not nullable)")
        return None
    match spec.type:
        case FieldType.STRING:
            if not isinstance(value, str):
                raise ValueError(f"expected a string, got {type(value).__name__}")
            return value
        case FieldType.INTEGER | FieldType.LONG:
            return _integer(spec, value)
        case FieldType.FLOAT:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise ValueError(f"expected a number, got {type(value).__name__}")
            return float(value)
        case FieldType.BOOLEAN:
            if not isinstance(value, bool):
                raise ValueError(f"expected a boolean, got {type(value).__name__}")
            return value
        case FieldType.DECIMAL:
            return _decimal(spec, value)
        case FieldType.TIMESTAMP:
            return _timestamp(value)


def map_item(entity_type: str, entity: EntitySpec, item: dict[str, Any]) -> dict[str, Any]:
    """The ``after`` record of ``item``; a field the item lacks counts as null."""
    record: dict[str, Any] = {}
    for name, spec in entity.fields.items():
        value = item.get(name)
        if spec.references and isinstance(value, dict):
            # An expanded many-to-one relation: keep only the referenced id.
            value = value.get("id")
        try:
            record[name] = map_value(spec, value)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise SourceDataError(
                f"{entity_type} {item.get(entity.key)!r}: field '{name}' = {value!r}: {exc}"
            ) from None
    return record
