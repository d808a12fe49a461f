"""Schema evolution through the registry under each compatibility level."""

from __future__ import annotations

from typing import Any

import pytest

from tests.registry.conftest import Api, fld, record

CUSTOMER_V1 = record("Customer", fld("id", "long"), fld("name", "string"))


def customer(*extra: dict[str, Any], name: str = "Customer") -> dict[str, Any]:
    return record(name, fld("id", "long"), fld("name", "string"), *extra)


def evolve(api: Api, level: str, *versions: Any, subject: str = "") -> list[int]:
    """Register ``versions`` in order under a subject set to ``level``; HTTP statuses."""
    subject = subject or f"evolve-{level.lower()}"
    api("PUT", f"/config/{subject}", json={"compatibility": level})
    return [api.register(subject, v).status_code for v in versions]


def test_backward_is_the_default_and_needs_defaults_for_added_fields(api: Api) -> None:
    assert api.register("c", CUSTOMER_V1).json() == {"id": 1}
    email = fld("email", ["null", "string"], default=None)
    assert api.register("c", customer(email)).json() == {"id": 2}
    rejected = api.register("c", customer(email, fld("phone", "string")))
    assert rejected.status_code == 409
    assert rejected.json() == {
        "error_code": 409,
        "message": "Schema being registered is incompatible with an earlier schema for subject "
        '"c", details: [READER_FIELD_MISSING_DEFAULT_VALUE at /fields/3: reader field '
        "'phone' has no default and the writer lacks it (new schema reading version 2)]",
    }
    assert api("GET", "/subjects/c/versions").json() == [1, 2]


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("BACKWARD", [200, 200]),
        ("FORWARD", [200, 409]),
        ("FULL", [200, 409]),
        ("NONE", [200, 200]),
    ],
)
def test_removing_a_field_without_default(api: Api, level: str, expected: list[int]) -> None:
    # old readers need 'name' and have no default for it
    assert evolve(api, level, CUSTOMER_V1, record("Customer", fld("id", "long"))) == expected


@pytest.mark.parametrize(
    ("level", "expected"),
    [("BACKWARD", [200, 200]), ("FORWARD", [200, 200]), ("FULL", [200, 200])],
)
def test_removing_a_field_that_had_a_default(api: Api, level: str, expected: list[int]) -> None:
    v1 = customer(fld("tier", "string", default="basic"))
    assert evolve(api, level, v1, CUSTOMER_V1) == expected


@pytest.mark.parametrize(
    ("level", "expected"),
    [("BACKWARD", [200, 409]), ("FORWARD", [200, 200]), ("FULL", [200, 409])],
)
def test_adding_a_field_without_default(api: Api, level: str, expected: list[int]) -> None:
    assert evolve(api, level, CUSTOMER_V1, customer(fld("email", "string"))) == expected


def status_enum(*symbols: str, **extra: Any) -> dict[str, Any]:
    enum = {"type": "enum", "name": "Status", "symbols": list(symbols), **extra}
    return customer(fld("status", enum))


@pytest.mark.parametrize(
    ("level", "old", "new", "expected"),
    [
        # a new symbol: new readers know all old symbols; old readers do not know the new one
        ("BACKWARD", status_enum("ACTIVE"), status_enum("ACTIVE", "BLOCKED"), [200, 200]),
        ("FORWARD", status_enum("ACTIVE"), status_enum("ACTIVE", "BLOCKED"), [200, 409]),
        # ... unless the old reader has an enum default to fall back to
        (
            "FORWARD",
            status_enum("ACTIVE", default="ACTIVE"),
            status_enum("ACTIVE", "BLOCKED", default="ACTIVE"),
            [200, 200],
        ),
        # a removed symbol: new readers cannot read old data holding it
        ("BACKWARD", status_enum("ACTIVE", "BLOCKED"), status_enum("ACTIVE"), [200, 409]),
    ],
)
def test_enum_symbols(api: Api, level: str, old: Any, new: Any, expected: list[int]) -> None:
    assert evolve(api, level, old, new) == expected


@pytest.mark.parametrize(
    ("level", "old", "new", "expected"),
    [
        ("BACKWARD", "int", "long", [200, 200]),
        ("BACKWARD", "long", "int", [200, 409]),
        ("FORWARD", "int", "long", [200, 409]),
        ("BACKWARD", "float", "double", [200, 200]),
        ("FULL", "string", "bytes", [200, 200]),
        ("BACKWARD", "string", "int", [200, 409]),
        ("NONE", "string", "int", [200, 200]),
    ],
)
def test_numeric_and_string_promotions(
    api: Api, level: str, old: str, new: str, expected: list[int]
) -> None:
    assert evolve(api, level, customer(fld("n", old)), customer(fld("n", new))) == expected


@pytest.mark.parametrize(("level", "expected"), [("BACKWARD", [200, 200]), ("FORWARD", [200, 409])])
def test_union_widening(api: Api, level: str, expected: list[int]) -> None:
    old = customer(fld("ref", ["null", "string"], default=None))
    new = customer(fld("ref", ["null", "string", "long"], default=None))
    assert evolve(api, level, old, new) == expected


def test_nested_record_changes_are_checked(api: Api) -> None:
    def with_address(zip_type: str, *extra: dict[str, Any]) -> dict[str, Any]:
        address = record("Address", fld("city", "string"), fld("zip", zip_type), *extra)
        return customer(fld("address", address))

    assert evolve(
        api,
        "FULL",
        with_address("string"),
        with_address("string", fld("country", "string", default="NL")),
        with_address("int"),
    ) == [200, 200, 409]


def test_renames_through_aliases(api: Api) -> None:
    full_name = fld("full_name", "string", aliases=["name"])
    field_alias = record("Customer", fld("id", "long"), full_name)
    field_renamed = record("Customer", fld("id", "long"), fld("full_name", "string"))
    record_alias = record("Client", *CUSTOMER_V1["fields"], aliases=["Customer"])
    record_renamed = record("Client", *CUSTOMER_V1["fields"])
    assert evolve(api, "BACKWARD", CUSTOMER_V1, field_alias, subject="f1") == [200, 200]
    assert evolve(api, "BACKWARD", CUSTOMER_V1, field_renamed, subject="f2") == [200, 409]
    assert evolve(api, "BACKWARD", CUSTOMER_V1, record_alias, subject="r1") == [200, 200]
    assert evolve(api, "BACKWARD", CUSTOMER_V1, record_renamed, subject="r2") == [200, 409]


# v1 -> v2 -> v3 where v3 only fits v2: transitive levels look back to v1, the others do not.
BACKWARD_CHAIN = [
    customer(),
    customer(fld("email", "string", default="")),
    customer(fld("email", "string")),  # reads v2 (has email) but not v1 (lacks it, no default)
]
FORWARD_CHAIN = [
    customer(fld("email", "string")),
    customer(fld("email", "string", default="")),
    customer(),  # v2 readers default email; v1 readers need it
]


@pytest.mark.parametrize(
    ("level", "chain", "expected"),
    [
        ("BACKWARD", BACKWARD_CHAIN, [200, 200, 200]),
        ("BACKWARD_TRANSITIVE", BACKWARD_CHAIN, [200, 200, 409]),
        ("FORWARD", FORWARD_CHAIN, [200, 200, 200]),
        ("FORWARD_TRANSITIVE", FORWARD_CHAIN, [200, 200, 409]),
        ("FULL", BACKWARD_CHAIN, [200, 200, 200]),
        ("FULL_TRANSITIVE", BACKWARD_CHAIN, [200, 200, 409]),
    ],
)
def test_transitive_levels_check_all_earlier_versions(
    api: Api, level: str, chain: list[Any], expected: list[int]
) -> None:
    assert evolve(api, level, *chain) == expected


def test_full_transitive_against_full(api: Api) -> None:
    v1 = customer()
    v2 = customer(fld("email", "string", default=""))
    v3 = customer(fld("email", "string", default=""), fld("phone", "string", default=""))
    v4 = customer(fld("phone", "string", default=""))
    assert evolve(api, "FULL_TRANSITIVE", v1, v2, v3, v4) == [200, 200, 200, 200]


def test_subject_level_overrides_global(api: Api) -> None:
    api("PUT", "/config", json={"compatibility": "FULL"})
    api.register("strict", CUSTOMER_V1)
    api.register("loose", CUSTOMER_V1)
    api("PUT", "/config/loose", json={"compatibility": "NONE"})
    changed = record("Customer", fld("id", "string"))
    assert api.register("strict", changed).status_code == 409
    assert api.register("loose", changed).json() == {"id": 2}


def test_reregistering_an_old_version_skips_the_check(api: Api) -> None:
    # Confluent answers the existing id for a schema already live under the subject
    assert evolve(api, "BACKWARD", CUSTOMER_V1, customer(fld("e", "int", default=0))) == [200, 200]
    assert api.register("evolve-backward", CUSTOMER_V1).json() == {"id": 1}
    assert api("GET", "/subjects/evolve-backward/versions").json() == [1, 2]
