"""Property tests of canonical form and compatibility over generated Avro schemas."""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mesh_tooling.registry.compatibility import CompatibilityLevel, check_compatibility
from mesh_tooling.registry.schema import parse_schema

from tests.registry.conftest import fld, record

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

_primitives = st.sampled_from(
    ["null", "boolean", "int", "long", "float", "double", "bytes", "string"]
)
_enums = st.lists(st.sampled_from("ABCDE"), min_size=1, max_size=4, unique=True).map(
    lambda symbols: {"type": "enum", "name": "_", "symbols": symbols}
)
_fixed = st.integers(0, 16).map(lambda size: {"type": "fixed", "name": "_", "size": size})


def _branch_key(node: Any) -> object:
    if isinstance(node, str):
        return node
    return node["type"] if node["type"] in ("array", "map") else id(node)


def _extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    not_union = children.filter(lambda n: not isinstance(n, list))
    return st.one_of(
        children.map(lambda t: {"type": "array", "items": t}),
        children.map(lambda t: {"type": "map", "values": t}),
        st.lists(children, min_size=1, max_size=4).map(
            lambda types: record("_", *(fld(f"f{i}", t) for i, t in enumerate(types)))
        ),
        st.lists(not_union, min_size=1, max_size=4, unique_by=_branch_key),
    )


def _name_uniquely(schema: Any, prefix: str = "T") -> Any:
    """Fresh copy of ``schema`` with every named type called T0, T1, ... (or ``prefix``N)."""
    counter = itertools.count()

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if isinstance(node, str):
            return node
        out = dict(node)
        if out["type"] in ("record", "enum", "fixed"):
            out["name"] = f"{prefix}{next(counter)}"
        if "items" in out:
            out["items"] = walk(out["items"])
        if "values" in out:
            out["values"] = walk(out["values"])
        if "fields" in out:
            out["fields"] = [{**f, "type": walk(f["type"])} for f in out["fields"]]
        return out

    return walk(schema)


avro_schemas = st.recursive(_primitives | _enums | _fixed, _extend, max_leaves=10).map(
    _name_uniquely
)


@PROPERTY_SETTINGS
@given(avro_schemas)
def test_every_schema_is_compatible_with_itself_at_every_level(schema: Any) -> None:
    parsed = parse_schema(json.dumps(schema))
    for level in CompatibilityLevel:
        assert check_compatibility(parsed, [(1, parsed)], level) == []


@PROPERTY_SETTINGS
@given(avro_schemas)
def test_canonical_form_ignores_formatting_and_key_order(schema: Any) -> None:
    compact = parse_schema(json.dumps(schema, separators=(",", ":")))
    pretty = parse_schema(json.dumps(schema, indent=3, sort_keys=True))
    assert compact.canonical == pretty.canonical


@PROPERTY_SETTINGS
@given(avro_schemas, avro_schemas.filter(lambda s: s != "null" and not isinstance(s, list)))
def test_adding_an_optional_field_with_default_keeps_full_compatibility(
    payload: Any, extra: Any
) -> None:
    optional = fld("added", ["null", _name_uniquely(extra, prefix="X")], default=None)
    old = parse_schema(json.dumps(record("Event", fld("payload", payload))))
    new = parse_schema(json.dumps(record("Event", fld("payload", payload), optional)))
    for level in (CompatibilityLevel.BACKWARD, CompatibilityLevel.FORWARD, CompatibilityLevel.FULL):
        assert check_compatibility(new, [(1, old)], level) == []


@PROPERTY_SETTINGS
@given(avro_schemas)
def test_removing_a_field_without_default_breaks_forward_only(payload: Any) -> None:
    old = parse_schema(json.dumps(record("Event", fld("id", "long"), fld("payload", payload))))
    new = parse_schema(json.dumps(record("Event", fld("id", "long"))))
    assert check_compatibility(new, [(1, old)], CompatibilityLevel.BACKWARD) == []
    assert check_compatibility(new, [(1, old)], CompatibilityLevel.FORWARD) == [
        "READER_FIELD_MISSING_DEFAULT_VALUE at /fields/1: reader field 'payload' has no default "
        "and the writer lacks it (version 1 reading new schema)"
    ]
