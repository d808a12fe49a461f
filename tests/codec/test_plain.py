"""Logical values decoded straight to their stored text (``AvroEventCodec.loads_plain``):
the catalog's records must come out byte for byte as through fastavro's ``datetime`` and
``Decimal`` objects, whatever the values, for every entity type of the sample domain."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.catalog import record
from mesh.catalog.fold import fold
from mesh.codec import AvroEventCodec
from mesh.codec.plain import decimal_text, epoch_seconds, iso_micros, iso_millis, plain_converter
from mesh.codec.wire import pack
from mesh.domain import load_domain
from mesh.errors import CodecError
from mesh.schemas import load_event_schemas
from mesh.settings import Settings
from tests.strategies import events

DOMAIN = load_domain(Settings().domain_config)
SCHEMAS = load_event_schemas(DOMAIN, Settings().schemas_dir)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SCHEMA_INFO = {"id": 1, "subject": "s", "version": 1}
TIMESTAMP = {"type": "long", "logicalType": "timestamp-millis"}


class Registry:
    """Schemas by id, as the registry serves them (no server needed here)."""

    def __init__(self) -> None:
        self.schemas: dict[int, Any] = {}

    def add(self, schema: dict[str, Any]) -> int:
        schema_id = len(self.schemas) + 1
        self.schemas[schema_id] = parse_schema(schema)
        return schema_id

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        return self.add(schema)

    def writer_schema(self, schema_id: int) -> Any:
        return self.schemas[schema_id]


def _codec(entity_type: str) -> tuple[AvroEventCodec, Registry]:
    registry = Registry()
    codec = AvroEventCodec(registry, f"{entity_type}-value", SCHEMAS[entity_type])  # type: ignore[arg-type]
    return codec, registry


def _stored(event: dict[str, Any]) -> bytes:
    """The record the catalog stores for ``event`` (as its first version)."""
    urn = DOMAIN.urn(event["tenant"], event["entity_type"], event["entity_id"])
    folded = fold(None, event, urn, SCHEMA_INFO)
    assert folded is not None
    return record.dumps(folded)


def _invoice_event() -> dict[str, Any]:
    at = EPOCH + timedelta(milliseconds=1_796_404_744_235)
    return {
        "event_id": "e1", "tenant": "default", "entity_type": "invoice", "entity_id": "7",
        "op": "UPDATE",
        "source": {"system": "directus", "instance": "directus", "collection": "invoices",
                   "position": 12, "timestamp": at},
        "occurred_at": at, "changed_fields": ["total"],
        "after": {"id": 7, "number": "INV-7", "customer": 3, "status": "open", "issued_at": at,
                  "total": Decimal("12.50"), "saga_key": None, "date_created": None,
                  "date_updated": at + timedelta(microseconds=1000)},
    }  # fmt: skip


def _orjson_datetime(micros: int) -> str:
    moment = EPOCH + timedelta(microseconds=micros)
    return orjson.dumps(moment).decode().strip('"')


@given(st.integers(min_value=-62_135_596_800_000, max_value=253_402_300_799_999))
def test_millis_read_as_orjson_writes_fastavros_datetime(millis: int) -> None:
    assert iso_millis(millis) == _orjson_datetime(millis * 1000)


@given(st.integers(min_value=-62_135_596_800_000_000, max_value=253_402_300_799_999_999))
def test_micros_read_as_orjson_writes_fastavros_datetime(micros: int) -> None:
    assert iso_micros(micros) == _orjson_datetime(micros)


@pytest.mark.parametrize("millis", [0, -1, 999, 1000, 1_796_404_744_000, 1_796_404_744_235])
def test_millis_edge_values(millis: int) -> None:
    assert iso_millis(millis) == _orjson_datetime(millis * 1000)


@pytest.mark.parametrize("millis", [253_402_300_800_000, -62_135_596_800_001])
def test_timestamps_beyond_datetime_fail_like_fastavro(millis: int) -> None:
    with pytest.raises(OverflowError):
        EPOCH + timedelta(microseconds=millis * 1000)
    with pytest.raises(OverflowError):
        iso_millis(millis)


def _fastavro_decimal(raw: bytes, precision: int, scale: int) -> Decimal:
    schema = {"type": "bytes", "logicalType": "decimal", "precision": precision, "scale": scale}
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema("bytes"), raw)
    value = schemaless_reader(io.BytesIO(buffer.getvalue()), parse_schema(schema), None)
    assert isinstance(value, Decimal)
    return value


@given(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.integers(min_value=1, max_value=38),
    st.integers(min_value=0, max_value=20),
)
def test_decimals_read_as_the_decimal_fastavro_makes(
    unscaled: int, precision: int, scale: int
) -> None:
    """Including values with more digits than the precision (fastavro rounds them) and
    small values with a large scale (``Decimal`` writes those in scientific notation)."""
    scale = min(scale, precision)
    raw = unscaled.to_bytes((unscaled.bit_length() + 8) // 8 or 1, "big", signed=True)
    assert decimal_text(raw, precision, scale) == str(_fastavro_decimal(raw, precision, scale))


@pytest.mark.parametrize("entity_type", sorted(SCHEMAS))
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_records_from_plain_events_are_byte_identical(entity_type: str, data: Any) -> None:
    codec, _ = _codec(entity_type)
    event = data.draw(events(DOMAIN, entity_type))
    message = codec.dumps(event)
    plain, objects = codec.loads_plain(message), codec.loads(message)
    assert record.dumps(plain) == record.dumps(objects)
    assert _stored(plain) == _stored(objects)


def test_the_sample_domains_schemas_take_the_plain_path() -> None:
    for schema in SCHEMAS.values():
        assert plain_converter(schema) is not None
    codec, _ = _codec("invoice")
    event = _invoice_event()
    plain = codec.loads_plain(codec.dumps(event))
    assert plain["source"]["timestamp"] == "2026-12-04T17:19:04.235000+00:00"
    assert plain["after"]["total"] == "12.50"
    assert plain["after"]["date_updated"] == "2026-12-04T17:19:04.236000+00:00"
    assert _stored(plain) == _stored(event)


def test_another_writer_schema_is_decoded_the_ordinary_way() -> None:
    """A message written with another version of the schema is resolved by fastavro
    (``datetime`` and ``Decimal`` objects); the stored record is the same either way."""
    codec, registry = _codec("invoice")
    older = orjson.loads(orjson.dumps(SCHEMAS["invoice"]))
    after = next(f for f in older["fields"] if f["name"] == "after")
    record_schema = next(b for b in after["type"] if b != "null")
    record_schema["fields"] = [f for f in record_schema["fields"] if f["name"] != "saga_key"]
    older_id = registry.add(older)
    event = _invoice_event()
    del event["after"]["saga_key"]
    buffer = io.BytesIO()
    schemaless_writer(buffer, registry.schemas[older_id], event)
    message = pack(older_id, buffer.getvalue())
    plain = codec.loads_plain(message)
    assert isinstance(plain["after"]["issued_at"], datetime)
    assert plain["after"]["saga_key"] is None
    assert record.dumps(plain) == record.dumps(codec.loads(message))


def test_a_corrupt_body_or_a_timestamp_out_of_range_is_a_codec_error() -> None:
    codec, _ = _codec("invoice")
    with pytest.raises(CodecError):
        codec.loads_plain(pack(codec.schema_id, b"\xff\xff"))
    # The same bytes as the schema would write, with occurred_at past the year 9999.
    raw_schema = orjson.loads(orjson.dumps(SCHEMAS["invoice"]))
    for field in raw_schema["fields"]:
        if field["name"] == "occurred_at":
            field["type"] = "long"
    event = _invoice_event()
    event["occurred_at"] = 253_402_300_800_000
    buffer = io.BytesIO()
    schemaless_writer(buffer, parse_schema(raw_schema), event)
    message = pack(codec.schema_id, buffer.getvalue())
    with pytest.raises(CodecError, match="OverflowError"):
        codec.loads_plain(message)
    with pytest.raises(CodecError, match="OverflowError"):
        codec.loads(message)


@pytest.mark.parametrize(
    "field_type",
    [
        {"type": "array", "items": {"type": "long", "logicalType": "timestamp-millis"}},
        {"type": "map", "values": {"type": "long", "logicalType": "timestamp-millis"}},
        ["null", {"type": "long", "logicalType": "timestamp-millis"}, "string"],
        {"type": "string", "logicalType": "uuid"},
        {"type": "int", "logicalType": "date"},
        {"type": "long", "logicalType": "local-timestamp-millis"},
        {
            "type": "record",
            "name": "Outer",
            "fields": [
                {
                    "name": "inner",
                    "type": {
                        "type": "record",
                        "name": "Inner",
                        "fields": [
                            {
                                "name": "at",
                                "type": {"type": "long", "logicalType": "timestamp-millis"},
                            }
                        ],
                    },
                }
            ],
        },
    ],
)
def test_logical_types_it_does_not_convert_leave_the_schema_to_the_ordinary_decode(
    field_type: Any,
) -> None:
    schema = {"type": "record", "name": "E", "fields": [{"name": "x", "type": field_type}]}
    assert plain_converter(schema) is None


def test_a_record_type_used_again_by_name_leaves_the_schema_to_the_ordinary_decode() -> None:
    at = {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}}
    schema = {
        "type": "record",
        "name": "E",
        "fields": [
            {"name": "a", "type": {"type": "record", "name": "Stamp", "fields": [at]}},
            {"name": "b", "type": "Stamp"},
        ],
    }
    assert plain_converter(schema) is None
    without = {"type": "record", "name": "P", "fields": [{"name": "n", "type": "long"}]}
    schema["fields"] = [{"name": "a", "type": without}, {"name": "b", "type": "P"}, at]
    assert plain_converter(schema) is not None


@given(st.integers(min_value=-62_135_596_800_000_000, max_value=253_402_300_799_999_999))
def test_epoch_seconds_of_the_text_equal_the_datetimes(micros: int) -> None:
    moment = EPOCH + timedelta(microseconds=micros)
    text = iso_micros(micros)
    assert epoch_seconds(text) == moment.timestamp()  # cached second or not
    assert epoch_seconds(text) == epoch_seconds(moment)
    assert (
        epoch_seconds(iso_millis(micros // 1000))
        == (EPOCH + timedelta(milliseconds=micros // 1000)).timestamp()
    )


@pytest.mark.parametrize(
    "text", ["2026-12-04T17:19:04.235+01:00", "2026-12-04T17:19:04.2+00:00", "2026-12-04T17:19:04Z"]
)
def test_epoch_seconds_of_other_iso_texts(text: str) -> None:
    iso_millis(1_796_404_744_000)  # its second is remembered: the text still decides
    assert epoch_seconds(text) == datetime.fromisoformat(text).timestamp()
