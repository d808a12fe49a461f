"""The two client libraries the project relies on, unchanged, against our registry.

python-schema-registry-client (sync and async) and confluent-kafka's SchemaRegistryClient
plus its Avro serializer / deserializer, each through its public API only.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, cast

import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry import SchemaRegistryClient as ConfluentClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.serialization import MessageField, SerializationContext
from schema_registry.client import AsyncSchemaRegistryClient, SchemaRegistryClient, schema
from schema_registry.client.errors import ClientError

from tests.registry.conftest import RegistryServer, fld, record

SUBJECT = "customers.directus.entity_changed-value"
TOPIC = "customers.directus.entity_changed"
CUSTOMER = record(
    "Customer",
    fld("id", "string"),
    fld("name", "string"),
    fld("status", {"type": "enum", "name": "Status", "symbols": ["ACTIVE", "BLOCKED"]}),
    fld("balance", {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}),
    namespace="dictamesh.customers",
)
CUSTOMER_V2 = {
    **CUSTOMER,
    "fields": [*CUSTOMER["fields"], fld("email", ["null", "string"], default=None)],
}
INCOMPATIBLE = {**CUSTOMER, "fields": [*CUSTOMER["fields"], fld("age", "int")]}


def test_python_schema_registry_client(registry: RegistryServer) -> None:
    client = SchemaRegistryClient(url=registry.url)
    v1, v2 = schema.AvroSchema(CUSTOMER), schema.AvroSchema(CUSTOMER_V2)

    assert client.register(SUBJECT, v1) == 1
    fresh = SchemaRegistryClient(url=registry.url)  # no cache: goes through check_version
    assert fresh.register(SUBJECT, v1) == 1
    by_id = fresh.get_by_id(1)
    assert by_id is not None
    assert by_id.raw_schema == CUSTOMER
    assert fresh.get_by_id(99) is None

    found = fresh.check_version(SUBJECT, v1)
    assert found is not None
    assert (found.subject, found.schema_id, found.version) == (SUBJECT, 1, 1)
    assert fresh.check_version(SUBJECT, v2) is None
    latest = fresh.get_schema(SUBJECT)
    assert latest is not None
    assert (latest.schema_id, latest.version, latest.schema.raw_schema) == (1, 1, CUSTOMER)
    assert fresh.get_schema(SUBJECT, version=7) is None
    assert fresh.get_schema(SUBJECT, version="first") is None  # 42202

    assert client.test_compatibility(SUBJECT, v2) is True
    assert client.test_compatibility(SUBJECT, INCOMPATIBLE) is False
    verbose = client.test_compatibility(SUBJECT, INCOMPATIBLE, verbose=True)
    assert verbose == {
        "is_compatible": False,
        "messages": [
            "READER_FIELD_MISSING_DEFAULT_VALUE at /fields/4: reader field 'age' has no default "
            "and the writer lacks it (new schema reading version 1)"
        ],
    }
    with pytest.raises(ClientError) as refused:
        client.register(SUBJECT, INCOMPATIBLE)
    assert refused.value.http_code == 409

    assert client.update_compatibility("FULL") is True  # PUT /config/
    assert client.get_compatibility() == "FULL"
    with pytest.raises(ClientError) as unset:  # as with Confluent: no subject-level config
        client.get_compatibility(SUBJECT)
    assert unset.value.http_code == 404
    assert client.update_compatibility("BACKWARD", SUBJECT) is True
    assert client.get_compatibility(SUBJECT) == "BACKWARD"

    assert client.register(SUBJECT, v2) == 2
    assert client.get_versions(SUBJECT) == [1, 2]
    assert client.get_versions("nobody") == []
    assert client.get_subjects() == [SUBJECT]
    subject_versions = client.get_schema_subject_versions(2)
    assert subject_versions is not None
    assert [(sv.subject, sv.version) for sv in subject_versions] == [(SUBJECT, 2)]
    assert client.get_schema_subject_versions(99) is None

    assert client.delete_version(SUBJECT, 2) == 2
    assert client.delete_subject(SUBJECT) == [1]
    assert client.delete_subject(SUBJECT) == []
    assert client.get_subjects() == []


async def test_async_python_schema_registry_client(registry: RegistryServer) -> None:
    client = AsyncSchemaRegistryClient(url=registry.url)
    v1, v2 = schema.AvroSchema(CUSTOMER), schema.AvroSchema(CUSTOMER_V2)

    assert await client.register(SUBJECT, v1) == 1
    assert await client.register("other-value", v1) == 1
    fresh = AsyncSchemaRegistryClient(url=registry.url)
    by_id = await fresh.get_by_id(1)
    assert by_id is not None
    assert by_id.raw_schema == CUSTOMER
    found = await fresh.check_version(SUBJECT, v1)
    assert found is not None
    assert (found.schema_id, found.version) == (1, 1)
    assert await client.test_compatibility(SUBJECT, v2) is True
    assert await client.test_compatibility(SUBJECT, INCOMPATIBLE) is False
    assert await client.update_compatibility("NONE", SUBJECT) is True
    assert await client.get_compatibility(SUBJECT) == "NONE"
    assert await client.register(SUBJECT, INCOMPATIBLE) == 2
    assert await client.get_versions(SUBJECT) == [1, 2]
    assert await client.get_subjects() == [SUBJECT, "other-value"]
    assert await client.delete_subject(SUBJECT) == [1, 2]


def test_confluent_kafka_client(registry: RegistryServer) -> None:
    client = ConfluentClient({"url": registry.url})
    v1 = Schema(json.dumps(CUSTOMER), "AVRO")
    v2 = Schema(json.dumps(CUSTOMER_V2), "AVRO")

    assert client.register_schema(SUBJECT, v1) == 1
    assert client.get_schema_types() == ["AVRO"]
    fresh = ConfluentClient({"url": registry.url})
    assert json.loads(fresh.get_schema(1).schema_str or "null") == CUSTOMER
    latest = fresh.get_latest_version(SUBJECT)
    assert (latest.subject, latest.version, latest.schema_id) == (SUBJECT, 1, 1)
    assert fresh.get_version(SUBJECT, 1).schema_id == 1
    looked_up = fresh.lookup_schema(SUBJECT, v1)
    assert (looked_up.schema_id, looked_up.version) == (1, 1)

    assert client.test_compatibility(SUBJECT, v2) is True
    assert client.test_compatibility(SUBJECT, Schema(json.dumps(INCOMPATIBLE), "AVRO")) is False
    assert client.test_compatibility_all_versions(SUBJECT, v2) is True
    # set_compatibility is annotated "-> str" but hands back the JSON body, as Confluent's
    updated = cast(object, client.set_compatibility(SUBJECT, "full"))
    assert updated == {"compatibility": "FULL"}
    assert client.get_compatibility(SUBJECT) == "FULL"
    updated = cast(object, client.set_compatibility(level="BACKWARD_TRANSITIVE"))
    assert updated == {"compatibility": "BACKWARD_TRANSITIVE"}
    assert client.get_compatibility() == "BACKWARD_TRANSITIVE"

    assert client.register_schema(SUBJECT, v2) == 2
    assert client.get_subjects() == [SUBJECT]
    assert client.get_versions(SUBJECT) == [1, 2]
    assert [(sv.subject, sv.version) for sv in client.get_schema_versions(2)] == [(SUBJECT, 2)]
    assert client.get_subjects_by_schema_id(1) == [SUBJECT]

    def error_of(call: Any, *args: Any) -> tuple[int, int]:
        with pytest.raises(SchemaRegistryError) as caught:
            call(*args)
        return caught.value.http_status_code, caught.value.error_code

    assert error_of(client.register_schema, SUBJECT, Schema(json.dumps(INCOMPATIBLE), "AVRO")) == (
        409,
        409,
    )
    assert error_of(client.register_schema, SUBJECT, Schema('{"type": "nope"}', "AVRO")) == (
        422,
        42201,
    )
    assert error_of(fresh.get_latest_version, "nobody") == (404, 40401)
    assert error_of(fresh.get_version, SUBJECT, 9) == (404, 40402)
    assert error_of(fresh.get_schema, 99) == (404, 40403)
    assert error_of(client.set_compatibility, SUBJECT, "SIDEWAYS") == (422, 42203)

    assert client.delete_version(SUBJECT, 2) == 2
    assert client.get_versions(SUBJECT) == [1]
    assert client.delete_subject(SUBJECT) == [1]
    assert client.get_subjects() == []
    assert client.delete_subject(SUBJECT, permanent=True) == [1, 2]
    assert error_of(client.get_versions, SUBJECT) == (404, 40401)


CUSTOMER_VALUE = {
    "id": "c-1",
    "name": "Ada",
    "status": "ACTIVE",
    "balance": Decimal("12.50"),
}


def test_confluent_avro_serde_round_trip(registry: RegistryServer) -> None:
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    serializer = AvroSerializer(ConfluentClient({"url": registry.url}), json.dumps(CUSTOMER))
    data = serializer(CUSTOMER_VALUE, ctx)
    assert data is not None
    assert data[0] == 0
    assert int.from_bytes(data[1:5], "big") == 1  # the id the serializer auto-registered

    # A deserializer with its own client learns the writer schema from the registry.
    deserializer = AvroDeserializer(ConfluentClient({"url": registry.url}))
    assert deserializer(data, ctx) == CUSTOMER_VALUE

    # A newer reader schema resolves old data, filling the added field's default.
    reader = AvroDeserializer(ConfluentClient({"url": registry.url}), json.dumps(CUSTOMER_V2))
    assert reader(data, ctx) == {**CUSTOMER_VALUE, "email": None}

    check = ConfluentClient({"url": registry.url})
    assert check.get_subjects() == [SUBJECT]
    assert check.get_latest_version(SUBJECT).schema_id == 1


def test_confluent_serializer_using_the_latest_registered_version(
    registry: RegistryServer,
) -> None:
    client = ConfluentClient({"url": registry.url})
    client.register_schema(SUBJECT, Schema(json.dumps(CUSTOMER), "AVRO"))
    assert client.register_schema(SUBJECT, Schema(json.dumps(CUSTOMER_V2), "AVRO")) == 2
    serializer = AvroSerializer(
        client, conf={"auto.register.schemas": False, "use.latest.version": True}
    )
    ctx = SerializationContext(TOPIC, MessageField.VALUE)
    value = {**CUSTOMER_VALUE, "email": "ada@example.com"}
    data = serializer(value, ctx)
    assert data is not None
    assert int.from_bytes(data[1:5], "big") == 2
    assert AvroDeserializer(ConfluentClient({"url": registry.url}))(data, ctx) == value
