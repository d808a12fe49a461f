"""Mapping source items onto Avro ``after`` records: types are checked, never guessed."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.domain import FieldSpec, FieldType, load_domain
from mesh.errors import SourceDataError
from mesh.settings import Settings
from mesh.sources.mapping import map_item, map_value

DOMAIN = load_domain(Settings().domain_config)
PRICE = DOMAIN.entities["product"].fields["price"]


def test_a_directus_invoice_maps_to_typed_values() -> None:
    item = {
        "id": 7,
        "number": "INV-7",
        "customer": 3,
        "status": "paid",
        "issued_at": "2026-03-01T10:20:30.000Z",
        "total": "3727.64",
        "saga_key": "order-3:invoice",
        "date_created": "2026-03-01T10:20:30.123Z",
        "date_updated": None,
        "extra_field_not_in_config": "ignored",
    }
    after = map_item("invoice", DOMAIN.entities["invoice"], item)
    assert after == {
        "id": 7,
        "number": "INV-7",
        "customer": 3,
        "status": "paid",
        "issued_at": datetime(2026, 3, 1, 10, 20, 30, tzinfo=UTC),
        "total": Decimal("3727.64"),
        "saga_key": "order-3:invoice",
        "date_created": datetime(2026, 3, 1, 10, 20, 30, 123000, tzinfo=UTC),
        "date_updated": None,
    }


def test_expanded_relations_keep_the_id_and_naive_timestamps_are_utc() -> None:
    item = {"id": 1, "invoice": {"id": 9, "number": "x"}, "product": "4", "quantity": 2,
            "unit_price": 5, "date_created": "2026-01-02T03:04:05"}  # fmt: skip
    after = map_item("invoice_item", DOMAIN.entities["invoice_item"], item)
    assert after["invoice"] == 9
    assert after["product"] == 4
    assert after["unit_price"] == Decimal("5.00")
    assert after["date_created"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("sku", None, "null is not allowed"),
        ("stock", "many", "invalid literal"),
        ("stock", True, "boolean is not an integer"),
        ("stock", 2**31, "out of range"),
        ("price", "12.345", "more than 2 decimal places"),
        ("price", "12345678901.00", "more than 12 digits"),
        ("price", "NaN", "not a finite number"),
        ("name", 42, "expected a string"),
        ("date_created", "yesterday", "Invalid isoformat"),
    ],
)
def test_values_that_do_not_fit_name_the_field(field: str, value: Any, reason: str) -> None:
    item = {"id": 5, "sku": "S-5", "name": "Hub", "price": "1.00", "stock": 1, field: value}
    with pytest.raises(SourceDataError) as info:
        map_item("product", DOMAIN.entities["product"], item)
    assert str(info.value).startswith(f"product 5: field '{field}' = {value!r}: ")
    assert reason in str(info.value)


@given(st.decimals(min_value=Decimal("-9999999999.99"), max_value=Decimal("9999999999.99"),
                   places=2, allow_nan=False, allow_infinity=False))  # fmt: skip
def test_decimals_within_precision_round_trip_exactly(value: Decimal) -> None:
    assert map_value(PRICE, str(value)) == value
    assert map_value(PRICE, format(value, "f")) == value


@given(st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_integers_pass_unchanged_and_from_strings(value: int) -> None:
    spec = FieldSpec(type=FieldType.INTEGER)
    assert map_value(spec, value) == value
    assert map_value(spec, str(value)) == value
