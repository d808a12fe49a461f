"""The event codec against the real schema registry: round trips, the wire format, errors
and interoperability with confluent-kafka's Avro serde in both directions."""

from __future__ import annotations

import asyncio
import json
import struct
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.codec import AvroEventCodec, RegistryClient, build_codecs, unpack
from mesh.domain import DomainConfig
from mesh.errors import CodecError, RegistryError, UnknownSchemaError
from mesh.schemas import load_event_schemas
from mesh.settings import Settings
from tests.strategies import events

DOMAIN_TYPES = ["customer", "product", "invoice", "invoice_item", "reservation"]


@pytest.fixture(scope="module")
def domain() -> DomainConfig:
    from mesh.domain import load_domain

    return load_domain(Settings().domain_config)


@pytest.fixture(scope="module")
def schemas(domain: DomainConfig) -> dict[str, dict[str, Any]]:
    return load_event_schemas(domain, Settings().schemas_dir)


@pytest.fixture(scope="module")
def codecs(
    registry_url: str, domain: DomainConfig, schemas: dict[str, dict[str, Any]]
) -> dict[str, AvroEventCodec]:
    return build_codecs(domain, schemas, RegistryClient(registry_url))


def _invoice(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": "0b7e6c1e-6a43-4c43-9d0e-000000000001",
        "tenant": "default",
        "entity_type": "invoice",
        "entity_id": "42",
        "op": "UPDATE",
        "source": {
            "system": "directus",
            "instance": "directus",
            "collection": "invoices",
            "position": 1234,
            "timestamp": datetime(2026, 11, 25, 12, 0, 0, 123000, tzinfo=UTC),
        },
        "occurred_at": datetime(2026, 11, 25, 12, 0, 1, tzinfo=UTC),
        "changed_fields": ["status", "total"],
        "after": {
            "id": 42,
            "number": "INV-00042 – Ünïcødé ✓",  # noqa: RUF001 (unicode on purpose)
            "customer": 7,
            "status": "paid",
            "issued_at": None,
            "total": Decimal("1234.50"),
            "saga_key": None,
            "date_created": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            "date_updated": None,
        },
    }
    event.update(overrides)
    return event


def test_round_trip_keeps_decimals_timestamps_unicode_and_nulls(
    codecs: dict[str, AvroEventCodec],
) -> None:
    codec = codecs["invoice"]
    event = _invoice()
    assert codec.loads(codec.dumps(event)) == event


def test_messages_carry_the_confluent_header_with_the_registered_id(
    codecs: dict[str, AvroEventCodec],
) -> None:
    codec = codecs["invoice"]
    data = codec.dumps(_invoice())
    magic, schema_id = struct.unpack(">bI", data[:5])
    assert magic == 0
    assert schema_id == codec.schema_id
    assert unpack(data)[0] == codec.schema_id


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), entity_type=st.sampled_from(DOMAIN_TYPES))
def test_any_event_round_trips(
    codecs: dict[str, AvroEventCodec], domain: DomainConfig, data: st.DataObject, entity_type: str
) -> None:
    event = data.draw(events(domain, entity_type))
    codec = codecs[entity_type]
    assert codec.loads(codec.dumps(event)) == event


def test_large_payload_round_trips(codecs: dict[str, AvroEventCodec]) -> None:
    big = "ü" * 1_000_000  # 2 MB of UTF-8
    event = _invoice(after={**_invoice()["after"], "number": big})
    codec = codecs["invoice"]
    assert codec.loads(codec.dumps(event))["after"]["number"] == big


def test_an_event_that_does_not_fit_the_schema_is_a_codec_error(
    codecs: dict[str, AvroEventCodec],
) -> None:
    event = _invoice(after={**_invoice()["after"], "id": "not-a-number"})
    with pytest.raises(CodecError, match=r"does not fit schema 'invoices\.directus"):
        codecs["invoice"].dumps(event)


def test_corrupt_and_foreign_messages_are_codec_errors(codecs: dict[str, AvroEventCodec]) -> None:
    codec = codecs["invoice"]
    with pytest.raises(CodecError, match="too short"):
        codec.loads(b"\x00\x01")
    with pytest.raises(CodecError, match="magic byte"):
        codec.loads(b'{"json": "instead of avro"}')
    truncated = codec.dumps(_invoice())[:20]
    with pytest.raises(CodecError, match="cannot decode"):
        codec.loads(truncated)


def test_unknown_schema_id_is_reported(codecs: dict[str, AvroEventCodec]) -> None:
    body = codecs["invoice"].dumps(_invoice())[5:]
    with pytest.raises(UnknownSchemaError, match="schema id 999999 is not known"):
        codecs["invoice"].loads(struct.pack(">bI", 0, 999_999) + body)


def test_unreachable_registry_is_a_retriable_error(schemas: dict[str, dict[str, Any]]) -> None:
    registry = RegistryClient("http://127.0.0.1:9", timeout=2)  # nothing listens on port 9
    codec = AvroEventCodec(registry, "invoices.directus.entity_changed-value", schemas["invoice"])
    with pytest.raises(RegistryError, match="unreachable") as info:
        codec.dumps(_invoice())
    assert info.value.retriable


async def test_our_events_decode_with_confluent_deserializer(
    registry_url: str, codecs: dict[str, AvroEventCodec], domain: DomainConfig
) -> None:
    def decode(data: bytes) -> Any:
        client = SchemaRegistryClient({"url": registry_url})
        deserializer = AvroDeserializer(client)
        ctx = SerializationContext(domain.topic("invoice"), MessageField.VALUE)
        return deserializer(data, ctx)

    event = _invoice()
    decoded = await asyncio.to_thread(decode, codecs["invoice"].dumps(event))
    assert decoded == event


async def test_confluent_serialized_events_decode_with_our_codec(
    registry_url: str,
    codecs: dict[str, AvroEventCodec],
    schemas: dict[str, dict[str, Any]],
    domain: DomainConfig,
) -> None:
    def encode(event: dict[str, Any]) -> bytes:
        client = SchemaRegistryClient({"url": registry_url})
        serializer = AvroSerializer(client, json.dumps(schemas["invoice"]))
        ctx = SerializationContext(domain.topic("invoice"), MessageField.VALUE)
        data = serializer(event, ctx)
        assert isinstance(data, bytes)
        return data

    event = _invoice()
    data = await asyncio.to_thread(encode, event)
    # Same schema, same subject: the registry hands both producers the same id.
    assert unpack(data)[0] == codecs["invoice"].schema_id
    assert codecs["invoice"].loads(data) == event
