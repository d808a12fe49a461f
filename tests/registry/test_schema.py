"""Schema parsing, validation and canonical form (mesh_tooling.registry.schema)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mesh_tooling.registry.schema import parse_schema

from mesh.errors import RegistryError
from tests.registry.conftest import fld, record


def canonical(schema: Any) -> str:
    return parse_schema(json.dumps(schema)).canonical


def test_whitespace_key_order_and_namespace_spelling_share_one_canonical_form() -> None:
    compact = record(
        "a.b.User", fld("id", "long"), fld("tags", {"type": "array", "items": "string"})
    )
    spaced = json.dumps(
        {
            "fields": [
                {"type": {"type": "long"}, "name": "id"},
                {"name": "tags", "type": {"items": "string", "type": "array"}},
            ],
            "namespace": "a.b",
            "name": "User",
            "type": "record",
        },
        indent=4,
    )
    assert parse_schema(spaced).canonical == canonical(compact)
    assert canonical(compact) == (
        '{"fields":[{"name":"id","type":"long"},'
        '{"name":"tags","type":{"items":"string","type":"array"}}],'
        '"name":"a.b.User","type":"record"}'
    )


def test_defaults_docs_aliases_and_logical_types_are_part_of_identity() -> None:
    base = record("R", fld("a", "int"))
    variants = [
        record("R", fld("a", "int", default=0)),
        record("R", fld("a", "int"), doc="a record"),
        record("R", fld("a", "int", aliases=["b"])),
        record("R", fld("a", {"type": "int", "logicalType": "date"})),
    ]
    forms = {canonical(base), *(canonical(v) for v in variants)}
    assert len(forms) == 5


def test_named_types_are_qualified_and_referenced_by_full_name() -> None:
    schema = record(
        "R",
        fld("e", {"type": "enum", "name": "E", "symbols": ["A"], "aliases": ["OldE"]}),
        fld("e2", "E"),
        fld("n", ["null", "R"]),
        namespace="ns",
    )
    parsed = parse_schema(json.dumps(schema))
    assert parsed.root["name"] == "ns.R"
    assert parsed.root["fields"][0]["type"]["aliases"] == ["ns.OldE"]
    assert parsed.root["fields"][1]["type"] == "ns.E"
    assert parsed.root["fields"][2]["type"] == ["null", "ns.R"]
    assert set(parsed.names) == {"ns.R", "ns.E"}


@pytest.mark.parametrize(
    ("schema", "detail"),
    [
        ("{not json", "schema is not valid JSON"),
        ({"type": "record", "name": "R"}, "record 'R' has no 'fields' array"),
        ({"type": "foo"}, "unknown type 'foo'"),
        (record("1R"), "illegal record name '1R'"),
        (record("R", fld("a", "int"), fld("a", "long")), "duplicate field 'a' in record 'R'"),
        (["int", "int"], "duplicate 'int' in union"),
        (["null", ["int"]], "unions may not immediately contain other unions"),
        (record("R", fld("a", "Missing")), "unknown type 'Missing'"),
        ({"type": "enum", "name": "E", "symbols": ["A", "A"]}, "All symbols in an enum"),
        ({"type": "enum", "name": "E", "symbols": ["not ok"]}, "illegal enum symbol"),
        ({"type": "fixed", "name": "F"}, "fixed 'F' needs a non-negative integer 'size'"),
        ({"type": "array"}, "array without 'items'"),
        (record("R", fld("a", "int", default="x")), "Default value <x> must match"),
        (record("R", fld("r", record("R", fld("b", "int")))), "redefined named type 'R'"),
        (5, "a schema must be a string, object or array"),
    ],
)
def test_invalid_schemas_raise_42201(schema: Any, detail: str) -> None:
    text = schema if isinstance(schema, str) else json.dumps(schema)
    with pytest.raises(RegistryError) as caught:
        parse_schema(text)
    assert (caught.value.status, caught.value.error_code) == (422, 42201)
    assert caught.value.message.startswith("Invalid schema: ")
    assert detail in caught.value.message


def test_references_make_named_types_of_other_schemas_usable() -> None:
    address = parse_schema(json.dumps(record("Address", fld("city", "string"), namespace="geo")))
    user = parse_schema(json.dumps(record("User", fld("home", "geo.Address"))), {"addr": address})
    assert user.root["fields"][0]["type"] == "geo.Address"
    assert user.resolve("geo.Address")["fields"][0]["name"] == "city"
    with pytest.raises(RegistryError, match=r"unknown type 'geo\.Address'"):
        parse_schema(json.dumps(record("User", fld("home", "geo.Address"))))
