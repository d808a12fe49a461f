"""Avro schema-resolution rules (mesh_tooling.registry.compatibility), without any server."""

from __future__ import annotations

import json
from typing import Any

import pytest
from mesh_tooling.registry.compatibility import CompatibilityLevel, check, check_compatibility
from mesh_tooling.registry.schema import ParsedSchema, parse_schema

from tests.registry.conftest import fld, record


def p(schema: Any) -> ParsedSchema:
    return parse_schema(json.dumps(schema))


def reasons(reader: Any, writer: Any) -> list[str]:
    return check(p(reader), p(writer))


USER_V1 = record("User", fld("id", "long"), fld("name", "string"))


def test_identical_schemas_are_compatible() -> None:
    assert reasons(USER_V1, USER_V1) == []


def test_reader_field_missing_in_writer_needs_a_default() -> None:
    with_default = record(
        "User", fld("id", "long"), fld("name", "string"), fld("age", "int", default=0)
    )
    without = record("User", fld("id", "long"), fld("name", "string"), fld("age", "int"))
    assert reasons(with_default, USER_V1) == []
    assert reasons(without, USER_V1) == [
        "READER_FIELD_MISSING_DEFAULT_VALUE at /fields/2: "
        "reader field 'age' has no default and the writer lacks it"
    ]


def test_writer_fields_unknown_to_the_reader_are_skipped() -> None:
    assert reasons(record("User", fld("id", "long")), USER_V1) == []


def test_fields_match_by_reader_alias() -> None:
    renamed = record("User", fld("id", "long"), fld("full_name", "string", aliases=["name"]))
    assert reasons(renamed, USER_V1) == []
    not_aliased = record("User", fld("id", "long"), fld("full_name", "string"))
    assert reasons(not_aliased, USER_V1) == [
        "READER_FIELD_MISSING_DEFAULT_VALUE at /fields/1: "
        "reader field 'full_name' has no default and the writer lacks it"
    ]


@pytest.mark.parametrize(
    ("reader", "writer"),
    [
        ("long", "int"),
        ("float", "int"),
        ("float", "long"),
        ("double", "int"),
        ("double", "long"),
        ("double", "float"),
        ("string", "bytes"),
        ("bytes", "string"),
    ],
)
def test_promotions(reader: str, writer: str) -> None:
    assert reasons(reader, writer) == []


@pytest.mark.parametrize(
    ("reader", "writer"),
    [("int", "long"), ("long", "float"), ("float", "double"), ("int", "string"), ("null", "int")],
)
def test_no_narrowing_or_unrelated_types(reader: str, writer: str) -> None:
    assert reasons(reader, writer) == [f"TYPE_MISMATCH at /: {reader} cannot read {writer}"]


def test_promotion_inside_a_record_field_reports_the_path() -> None:
    assert reasons(record("R", fld("n", "long")), record("R", fld("n", "int"))) == []
    assert reasons(record("R", fld("n", "int")), record("R", fld("n", "long"))) == [
        "TYPE_MISMATCH at /fields/0/type: int cannot read long"
    ]


def test_logical_types_ride_on_their_underlying_type() -> None:
    date = {"type": "int", "logicalType": "date"}
    millis = {"type": "long", "logicalType": "timestamp-millis"}
    assert reasons(millis, date) == []  # int -> long promotion
    assert reasons("int", date) == []
    assert reasons(date, millis) == ["TYPE_MISMATCH at /: int cannot read long"]


def test_enum_writer_symbols_must_exist_in_reader_unless_it_has_a_default() -> None:
    abc = {"type": "enum", "name": "Status", "symbols": ["A", "B", "C"]}
    ab = {"type": "enum", "name": "Status", "symbols": ["A", "B"]}
    ab_default = {**ab, "default": "A"}
    assert reasons(abc, ab) == []
    assert reasons(ab, abc) == [
        "MISSING_ENUM_SYMBOLS at /symbols: reader Status has no default and lacks writer "
        "symbols ['C']"
    ]
    assert reasons(ab_default, abc) == []


def test_fixed_needs_same_name_and_size() -> None:
    f4 = {"type": "fixed", "name": "Hash", "size": 4}
    assert reasons(f4, f4) == []
    assert reasons(f4, {**f4, "size": 8}) == [
        "FIXED_SIZE_MISMATCH at /size: reader Hash has size 4, writer has 8"
    ]
    assert reasons(f4, {**f4, "name": "Other"}) == [
        "NAME_MISMATCH at /name: reader Hash does not match writer Other or its aliases"
    ]


def test_named_types_match_by_unqualified_name_or_reader_alias() -> None:
    old = record("OldUser", fld("id", "long"), namespace="a")
    assert reasons(record("OldUser", fld("id", "long"), namespace="b"), old) == []
    assert reasons(record("User", fld("id", "long"), namespace="a", aliases=["OldUser"]), old) == []
    assert reasons(record("User", fld("id", "long"), namespace="a"), old) == [
        "NAME_MISMATCH at /name: reader a.User does not match writer a.OldUser or its aliases"
    ]


def test_arrays_and_maps_check_items_and_values() -> None:
    assert reasons({"type": "array", "items": "long"}, {"type": "array", "items": "int"}) == []
    assert reasons({"type": "map", "values": "int"}, {"type": "map", "values": "string"}) == [
        "TYPE_MISMATCH at /values: int cannot read string"
    ]
    assert reasons({"type": "array", "items": "int"}, {"type": "map", "values": "int"}) == [
        "TYPE_MISMATCH at /: array cannot read map"
    ]


def test_unions() -> None:
    # non-union writer, union reader: some branch must read it
    assert reasons(["null", "long"], "int") == []
    assert reasons(["null", "string"], "int") == ["MISSING_UNION_BRANCH at /: no branch reads int"]
    # union writer, non-union reader: every branch must be readable
    assert reasons("long", ["int", "long"]) == []
    assert reasons("string", ["null", "string"]) == ["TYPE_MISMATCH at /: string cannot read null"]
    # union to union: widening is fine, narrowing is not
    assert reasons(["null", "string", "int"], ["null", "string"]) == []
    assert reasons(["null", "string"], ["null", "string", "int"]) == [
        "MISSING_UNION_BRANCH at /: no branch reads int"
    ]


def test_nested_records_report_the_nested_path() -> None:
    def order(total: str) -> dict[str, Any]:
        line = record("Line", fld("sku", "string"), fld("total", total))
        return record("Order", fld("lines", {"type": "array", "items": line}))

    assert reasons(order("double"), order("float")) == []
    assert reasons(order("float"), order("double")) == [
        "TYPE_MISMATCH at /fields/0/type/items/fields/1/type: float cannot read double"
    ]


def test_recursive_records_terminate() -> None:
    def linked(extra: list[dict[str, Any]]) -> dict[str, Any]:
        return record("Node", fld("value", "int"), fld("next", ["null", "Node"]), *extra)

    assert reasons(linked([]), linked([])) == []
    assert reasons(linked([fld("label", "string", default="")]), linked([])) == []
    assert reasons(linked([fld("label", "string")]), linked([])) == [
        "READER_FIELD_MISSING_DEFAULT_VALUE at /fields/2: "
        "reader field 'label' has no default and the writer lacks it"
    ]


def test_a_named_type_used_twice_is_reported_once_per_path() -> None:
    point = record("Point", fld("x", "int"))
    reader = record("Line", fld("a", point), fld("b", "Point"))
    writer = record("Line", fld("a", record("Point", fld("x", "string"))), fld("b", "Point"))
    assert reasons(reader, writer) == [
        "TYPE_MISMATCH at /fields/0/type/fields/0/type: int cannot read string"
    ]


V1 = p(record("R", fld("a", "int")))
V2 = p(record("R", fld("a", "int"), fld("b", "int", default=0)))
V3 = p(record("R", fld("a", "int"), fld("b", "int", default=0), fld("c", "int", default=0)))
DROP_A = p(record("R", fld("b", "int", default=0)))


@pytest.mark.parametrize("level", list(CompatibilityLevel))
def test_a_schema_follows_itself_at_every_level(level: CompatibilityLevel) -> None:
    assert check_compatibility(V2, [(1, V2)], level) == []


def test_directions_of_each_level() -> None:
    # DROP_A reads V2 data (a is skipped, b present) but V2 cannot read DROP_A data (no a).
    history = [(1, V1), (2, V2)]
    assert check_compatibility(DROP_A, history, CompatibilityLevel.BACKWARD) == []
    assert check_compatibility(DROP_A, history, CompatibilityLevel.FORWARD) == [
        "READER_FIELD_MISSING_DEFAULT_VALUE at /fields/0: reader field 'a' has no default and "
        "the writer lacks it (version 2 reading new schema)"
    ]
    assert check_compatibility(DROP_A, history, CompatibilityLevel.FULL) == (
        check_compatibility(DROP_A, history, CompatibilityLevel.FORWARD)
    )
    assert check_compatibility(DROP_A, history, CompatibilityLevel.NONE) == []


def test_transitive_levels_check_every_earlier_version() -> None:
    # DROP_A's b has a default, so it reads V2 (b present) and V1 (b defaulted) alike;
    # a schema needing b without default reads V2 but not V1.
    needs_b = p(record("R", fld("a", "int"), fld("b", "int")))
    history = [(1, V1), (2, V2)]
    assert check_compatibility(needs_b, history, CompatibilityLevel.BACKWARD) == []
    assert check_compatibility(needs_b, history, CompatibilityLevel.BACKWARD_TRANSITIVE) == [
        "READER_FIELD_MISSING_DEFAULT_VALUE at /fields/1: reader field 'b' has no default and "
        "the writer lacks it (new schema reading version 1)"
    ]
    assert check_compatibility(V3, [(1, V1), (2, V2)], CompatibilityLevel.FULL_TRANSITIVE) == []


def test_level_properties() -> None:
    level = CompatibilityLevel
    assert [lv for lv in level if lv.backward] == [
        level.BACKWARD,
        level.BACKWARD_TRANSITIVE,
        level.FULL,
        level.FULL_TRANSITIVE,
    ]
    assert [lv for lv in level if lv.forward] == [
        level.FORWARD,
        level.FORWARD_TRANSITIVE,
        level.FULL,
        level.FULL_TRANSITIVE,
    ]
    assert [lv for lv in level if lv.transitive] == [
        level.BACKWARD_TRANSITIVE,
        level.FORWARD_TRANSITIVE,
        level.FULL_TRANSITIVE,
    ]
