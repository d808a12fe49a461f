"""Avro logical values as the plain JSON values the catalog stores, without building
``datetime`` or ``Decimal`` objects on the way.

fastavro turns a ``timestamp-millis`` into a ``datetime`` (~2 µs each) and a ``decimal``
into a ``Decimal``, and the catalog then writes them out as text: ISO 8601 in UTC (as
orjson writes an aware ``datetime``) and the decimal's exact string. Decoding the raw
values (``long``, ``bytes``) and writing that text directly gives the very same bytes in
the stored record at a fraction of the cost. :func:`plain_converter` builds the
conversion for one schema, or says that schema needs the ordinary decode.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Context
from typing import Any

import orjson

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECONDS: dict[int, str] = {}
"""``YYYY-MM-DDTHH:MM:SS`` per Unix second seen lately: a batch's timestamps cluster."""
_TEXTS: dict[str, int] = {}
"""The other way round: the Unix second of each of those texts."""
_SECONDS_KEPT = 4096


def _second(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a Unix second, remembered in :data:`_SECONDS`."""
    # OverflowError outside years 1-9999, as fastavro's own conversion.
    moment = _EPOCH + timedelta(seconds=seconds)
    text = orjson.dumps(moment)[1:-7].decode()  # without the quotes and "+00:00"
    if len(_SECONDS) >= _SECONDS_KEPT:
        _SECONDS.clear()
        _TEXTS.clear()
    _SECONDS[seconds] = text
    _TEXTS[text] = seconds
    return text


def epoch_seconds(moment: str | datetime) -> float:
    """Unix seconds of a timestamp as :func:`iso_millis` or :func:`iso_micros` wrote it
    (or of any ISO 8601 text with an offset, or a ``datetime``): what ``timestamp()`` of
    the ``datetime`` gives, without making one for a second written lately."""
    if isinstance(moment, str):
        seconds = _TEXTS.get(moment[:19])
        if seconds is not None and moment.endswith("+00:00"):
            fraction = moment[20:-6]  # "" or the 6 digits after "."
            if len(moment) == 25 or (len(fraction) == 6 and moment[19] == "."):
                micros = int(fraction) if fraction else 0
                return (seconds * 1_000_000 + micros) / 1_000_000
        moment = datetime.fromisoformat(moment)
    return moment.timestamp()


_MILLIS = [f".{n:03d}000+00:00" for n in range(1000)]
_MILLIS[0] = "+00:00"


def iso_micros(micros: int) -> str:
    """A ``timestamp-micros`` value (µs since the Unix epoch) as orjson writes the UTC
    ``datetime`` fastavro makes of it: ``2026-11-01T12:00:00.250000+00:00``, without
    the fraction when it is zero."""
    seconds, fraction = divmod(micros, 1_000_000)
    text = _SECONDS.get(seconds)
    if text is None:
        text = _second(seconds)
    if fraction:
        return f"{text}.{fraction:06d}+00:00"
    return text + "+00:00"


def iso_millis(millis: int) -> str:
    """A ``timestamp-millis`` value as :func:`iso_micros` writes it."""
    seconds, fraction = divmod(millis, 1000)
    text = _SECONDS.get(seconds)
    if text is None:
        text = _second(seconds)
    return text + _MILLIS[fraction]


def decimal_text(raw: bytes, precision: int, scale: int) -> str:
    """A ``decimal`` (big-endian two's complement of the unscaled value) as ``str`` of
    the ``Decimal`` fastavro makes of it: rounded to ``precision`` digits, scientific
    notation where ``Decimal`` uses it."""
    unscaled = int.from_bytes(raw, "big", signed=True)
    digits = str(-unscaled if unscaled < 0 else unscaled)
    # Plain notation while Decimal's adjusted exponent stays >= -6 and no rounding.
    if len(digits) <= precision and len(digits) - 1 - scale >= -6:
        if not scale:
            return str(unscaled)
        digits = digits.rjust(scale + 1, "0")
        sign = "-" if unscaled < 0 else ""
        return f"{sign}{digits[:-scale]}.{digits[-scale:]}"
    context = Context(prec=precision)
    return str(context.create_decimal(unscaled).scaleb(-scale, context))


Convert = Callable[[Any], Any]


def _field_converter(schema: Any) -> Convert | None:
    """The conversion of a field's raw value, ``None`` when it has no logical type; raises
    :class:`LookupError` for a logical type or a nesting this module does not handle."""
    if isinstance(schema, list):  # a union: only [null, logical] is handled
        branches = [b for b in schema if b != "null"]
        if len(branches) == 1 and len(schema) == 2:
            return _field_converter(branches[0])
        if any(_has_logical(b) for b in branches):
            raise LookupError("a union of logical types")
        return None
    if not isinstance(schema, dict):
        return None
    logical = schema.get("logicalType")
    kind = schema.get("type")
    if kind == "record":
        return None  # its fields are the caller's
    if logical is None:
        if _has_logical(schema):
            raise LookupError("a logical type below a field")
        return None
    if logical == "timestamp-millis" and kind == "long":
        return iso_millis
    if logical == "timestamp-micros" and kind == "long":
        return iso_micros
    if logical == "decimal" and kind == "bytes":
        precision, scale = int(schema["precision"]), int(schema.get("scale", 0))
        return lambda raw: decimal_text(raw, precision, scale)
    raise LookupError(f"logical type {logical} on {kind}")


def _has_logical(schema: Any) -> bool:
    if isinstance(schema, list):
        return any(_has_logical(s) for s in schema)
    if isinstance(schema, dict):
        return "logicalType" in schema or any(
            _has_logical(v) for k, v in schema.items() if k in ("type", "items", "values", "fields")
        )
    return False


def _record_fields(schema: Any) -> list[dict[str, Any]] | None:
    """The fields of a record schema, or of the one record of a ``[null, record]`` union."""
    if isinstance(schema, list):
        records = [s for s in schema if s != "null"]
        return _record_fields(records[0]) if len(records) == 1 else None
    if isinstance(schema, dict) and schema.get("type") == "record":
        fields: list[dict[str, Any]] = schema["fields"]
        return fields
    if isinstance(schema, dict) and isinstance(schema.get("type"), dict | list):
        return _record_fields(schema["type"])
    return None


_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _logical_by_reference(schema: Any) -> bool:
    """True when a named type holding a logical type is used again by its name (the
    conversion only follows types written out where they are used)."""
    holding: set[str] = set()
    references: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, str):
            if node not in _PRIMITIVES:
                references.add(node.rsplit(".", 1)[-1])
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            named = "name" in node and node.get("type") in ("record", "fixed", "enum")
            if named and _has_logical(node):
                holding.add(str(node["name"]).rsplit(".", 1)[-1])
            for key in ("type", "items", "values", "fields"):
                if key in node:
                    walk(node[key])

    walk(schema)
    return bool(holding & references)


def strip_logical(schema: Any) -> Any:
    """A copy of ``schema`` without logical types: decoding it gives the raw values."""
    schema = copy.deepcopy(schema)

    def strip(node: Any) -> None:
        if isinstance(node, dict):
            node.pop("logicalType", None)
            for value in node.values():
                strip(value)
        elif isinstance(node, list):
            for value in node:
                strip(value)

    strip(schema)
    return schema


def plain_converter(schema: dict[str, Any]) -> Callable[[dict[str, Any]], None] | None:
    """For an event ``schema`` (a record; unparsed): what turns an event decoded with
    :func:`strip_logical` of it into that event's plain form, in place; ``None`` when some
    logical type sits where this module does not convert it (in an array or map, a union of
    several, or a kind not handled): such a schema is decoded the ordinary way.

    Handled: ``timestamp-millis`` and ``timestamp-micros`` on ``long`` and ``decimal`` on
    ``bytes``, in fields of the event record and of the records in its fields (one level:
    the envelope's ``source`` and ``after``), optionally nullable.
    """
    steps: list[tuple[str | None, str, Convert]] = []
    if _logical_by_reference(schema):
        return None
    try:
        for field in schema["fields"]:
            convert = _field_converter(field["type"])
            if convert is not None:
                steps.append((None, field["name"], convert))
                continue
            inner = _record_fields(field["type"])
            if inner is None:
                continue
            for sub in inner:
                convert = _field_converter(sub["type"])
                if convert is not None:
                    steps.append((field["name"], sub["name"], convert))
                elif _record_fields(sub["type"]) is not None and _has_logical(sub["type"]):
                    raise LookupError("a logical type two records down")
    except LookupError:
        return None

    def to_plain(event: dict[str, Any]) -> None:
        for parent, name, convert in steps:
            record = event if parent is None else event[parent]
            if record is not None:
                value = record[name]
                if value is not None:
                    record[name] = convert(value)

    return to_plain
