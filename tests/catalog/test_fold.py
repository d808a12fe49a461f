"""Folding events into records and relation indexes: version-guarded and order-proof."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mesh.catalog.fold import (
    apply_op,
    fold,
    present_members,
    relation_ops,
    reverse_relations,
)
from mesh.domain import load_domain
from mesh.settings import Settings

DOMAIN = load_domain(Settings().domain_config)
RELATIONS = reverse_relations(DOMAIN)
T0 = datetime(2026, 11, 1, tzinfo=UTC)
SCHEMA = {"id": 3, "subject": "invoices.directus.entity_changed-value", "version": 1}


def invoice_event(position: int, op: str = "UPDATE", customer: int | None = 1) -> dict[str, Any]:
    after = None if op == "DELETE" else {"id": 9, "number": "INV-9", "customer": customer}
    return {
        "event_id": f"e{position}",
        "tenant": "default",
        "entity_type": "invoice",
        "entity_id": "9",
        "op": op,
        "source": {
            "system": "directus",
            "instance": "directus",
            "collection": "invoices",
            "position": position,
            "timestamp": T0 + timedelta(seconds=position),
        },
        "occurred_at": T0,
        "changed_fields": ["customer"],
        "after": after,
    }


URN = "urn:dictamesh:default:invoice:9"


def test_relations_come_from_the_config() -> None:
    assert {(r.name, r.child_type, r.field) for r in RELATIONS} == {
        ("customer.invoices", "invoice", "customer"),
        ("invoice.items", "invoice_item", "invoice"),
        ("product.invoice_items", "invoice_item", "product"),
        ("product.reservations", "reservation", "product"),
    }


def test_a_newer_event_replaces_the_state_and_keeps_first_seen() -> None:
    first = fold(None, invoice_event(10, "CREATE"), URN, SCHEMA)
    assert first is not None
    second = fold(first, invoice_event(12, customer=2), URN, SCHEMA)
    assert second is not None
    assert second["version"] == 12
    assert second["state"]["customer"] == 2
    assert second["first_seen"] == T0 + timedelta(seconds=10)
    assert second["last_changed"] == T0 + timedelta(seconds=12)
    assert second["schema"] == SCHEMA
    assert second["urn"] == URN


def test_events_not_newer_change_nothing() -> None:
    current = fold(None, invoice_event(10), URN, SCHEMA)
    assert fold(current, invoice_event(10, customer=5), URN, SCHEMA) is None
    assert fold(current, invoice_event(3, customer=5), URN, SCHEMA) is None


def test_delete_keeps_the_last_state_and_is_marked() -> None:
    current = fold(None, invoice_event(10, customer=4), URN, SCHEMA)
    deleted = fold(current, invoice_event(11, "DELETE"), URN, SCHEMA)
    assert deleted is not None
    assert deleted["deleted"] is True
    assert deleted["state"]["customer"] == 4


def test_repointing_moves_the_invoice_between_customers() -> None:
    before = fold(None, invoice_event(10, customer=1), URN, SCHEMA)
    after = fold(before, invoice_event(11, customer=2), URN, SCHEMA)
    assert after is not None
    ops = relation_ops(DOMAIN, RELATIONS, before, after)
    assert [(o.parent, o.present, o.version) for o in ops] == [
        ("urn:dictamesh:default:customer:1", False, 11),
        ("urn:dictamesh:default:customer:2", True, 11),
    ]
    deleted = fold(after, invoice_event(12, "DELETE"), URN, SCHEMA)
    assert deleted is not None
    assert [(o.parent, o.present) for o in relation_ops(DOMAIN, RELATIONS, after, deleted)] == [
        ("urn:dictamesh:default:customer:2", False)
    ]


@given(
    st.lists(
        st.tuples(st.integers(1, 50), st.sampled_from(["UPDATE", "DELETE"]), st.integers(1, 3)),
        min_size=1,
        max_size=20,
        unique_by=lambda change: change[0],  # one event per version, as a source emits
    ),
    st.randoms(use_true_random=False),
)
def test_any_delivery_order_with_duplicates_converges(
    changes: list[tuple[int, str, int]], rng: Any
) -> None:
    """Records and every customer's index end equal to applying the events in order."""
    events = [invoice_event(pos, op, cust) for pos, op, cust in changes]

    def run(order: list[dict[str, Any]]) -> tuple[Any, dict[str, list[str]]]:
        current = None
        indexes: dict[str, dict[str, Any]] = {}
        for event in order:
            new = fold(current, event, URN, SCHEMA)
            if new is None:
                continue
            for op in relation_ops(DOMAIN, RELATIONS, current, new):
                members = indexes.setdefault(op.parent, {})
                updated = apply_op(members.get(op.member), op.as_json())
                if updated is not None:
                    members[op.member] = updated
            current = new
        return current, {p: present_members(m.items()) for p, m in indexes.items()}

    in_order = run(sorted(events, key=lambda e: e["source"]["position"]))
    shuffled = events + events[: len(events) // 2]  # with duplicates
    rng.shuffle(shuffled)
    final, indexes = run(shuffled)
    assert final is not None
    assert in_order[0] is not None
    assert final["version"] == in_order[0]["version"]
    assert final["deleted"] == in_order[0]["deleted"]
    # The newest event decides where the invoice is listed, whatever the order.
    newest = max(events, key=lambda e: e["source"]["position"])
    owner = None if newest["op"] == "DELETE" else newest["after"]["customer"]
    listed = {p for p, members in indexes.items() if members == ["9"]}
    assert listed == ({f"urn:dictamesh:default:customer:{owner}"} if owner else set())
