"""The relation check's comparison and repairs (``mesh.catalog.consistency``), as properties.

A random history of children re-pointed between parents (and deleted) is folded into an
index with the catalog's own functions (:func:`relation_ops`, :func:`apply_op`), delivering
the relation changes in any order and losing any of them. Whatever was lost, the check
finds exactly the wrong members, and applying its repairs with the catalog's version guard
makes the index match the records.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mesh.catalog.consistency import (
    ChildRef,
    Difference,
    IndexEntry,
    Kind,
    confirmed,
    differences,
)
from mesh.catalog.fold import RelationOp, ReverseRelation, apply_op, relation_ops
from mesh.domain import DomainConfig
from mesh.web.relations_check import parse_repairs

RELATION = ReverseRelation("customer.invoices", "customer", "invoice", "customer")
PARENTS = ["1", "2", "3", "4"]

Step = tuple[int, str | None, bool]
"""(child, parent id or None, deleted)."""

histories = st.lists(
    st.tuples(st.integers(0, 5), st.one_of(st.none(), st.sampled_from(PARENTS)), st.booleans()),
    min_size=1,
    max_size=40,
)


def record(
    child: int, version: int, parent: str | None, deleted: bool, tenant: str = "default"
) -> dict[str, Any]:
    return {"type": "invoice", "id": str(child), "version": version, "deleted": deleted,
            "tenant": tenant,
            "state": {"customer": None if parent is None else int(parent)}}  # fmt: skip


def fold_history(
    domain: DomainConfig, steps: list[Step]
) -> tuple[dict[int, Any], list[RelationOp]]:
    """The final child records and every relation change the history implied, in order."""
    records: dict[int, Any] = {}
    ops: list[RelationOp] = []
    for version, (child, parent, deleted) in enumerate(steps, start=1):
        after = record(child, version, parent, deleted)
        ops += relation_ops(domain, [RELATION], records.get(child), after)
        records[child] = after
    return records, ops


def apply_all(index: dict[tuple[str, str], list[Any]], ops: list[RelationOp]) -> None:
    for op in ops:
        entry = apply_op(index.get((op.parent, op.member)), op.as_json())
        if entry is not None:
            index[(op.parent, op.member)] = entry


def scan(
    domain: DomainConfig, records: dict[int, Any], index: dict[tuple[str, str], list[Any]]
) -> tuple[list[ChildRef], list[IndexEntry]]:
    children = [
        ChildRef(
            RELATION.name,
            str(child),
            rec["version"],
            None
            if rec["deleted"] or rec["state"]["customer"] is None
            else domain.urn("default", "customer", str(rec["state"]["customer"])),
            "default",
        )
        for child, rec in records.items()
    ]
    entries = [IndexEntry(RELATION.name, p, m, v, ok) for (p, m), (v, ok) in index.items()]
    return children, entries


def truth(domain: DomainConfig, records: dict[int, Any]) -> set[tuple[str, str]]:
    return {
        (domain.urn("default", "customer", str(rec["state"]["customer"])), str(child))
        for child, rec in records.items()
        if not rec["deleted"] and rec["state"]["customer"] is not None
    }


@given(histories, st.randoms(use_true_random=False))
def test_an_index_fed_every_change_in_any_order_has_no_differences(
    sample_domain: DomainConfig, steps: list[Step], rng: random.Random
) -> None:
    records, ops = fold_history(sample_domain, steps)
    rng.shuffle(ops)
    index: dict[tuple[str, str], list[Any]] = {}
    apply_all(index, ops)
    assert differences(*scan(sample_domain, records, index)) == []


@given(histories, st.data())
def test_lost_changes_are_found_exactly_and_their_repairs_put_the_index_right(
    sample_domain: DomainConfig, steps: list[Step], data: st.DataObject
) -> None:
    records, ops = fold_history(sample_domain, steps)
    kept = [op for op in ops if data.draw(st.booleans(), label=f"deliver {op}")]
    index: dict[tuple[str, str], list[Any]] = {}
    apply_all(index, kept)

    found = differences(*scan(sample_domain, records, index))
    listed = {(p, m) for (p, m), (_, ok) in index.items() if ok}
    wrong = listed ^ truth(sample_domain, records)
    assert {(d.parent, d.member) for d in found} == wrong
    for d in found:
        assert (d.kind is Kind.MISSING) == ((d.parent, d.member) not in listed)

    # Lost changes only leave entries older than the records: every repair is allowed.
    repairs = [d.repair() for d in found]
    assert None not in repairs
    apply_all(index, [op for op in repairs if op is not None])
    assert differences(*scan(sample_domain, records, index)) == []


def test_a_repair_never_replaces_a_newer_entry_but_does_replace_its_own_version() -> None:
    urn = "urn:dictamesh:default:customer:1"
    stale = Difference(Kind.EXTRA, RELATION.name, urn, "7", 10, None, (12, True))
    assert stale.repair() is None  # the record is behind the index: nothing to send
    same = Difference(Kind.MISSING, RELATION.name, urn, "7", 12, urn, (12, False))
    op = same.repair()
    assert op is not None
    assert (op.repair, op.present, op.version) == (True, True, 12)
    assert apply_op([12, False], op.as_json()) == [12, True]
    plain = RelationOp(RELATION.name, urn, "7", 12, True)
    assert apply_op([12, False], plain.as_json()) is None  # ordinary changes need newer
    assert apply_op([13, False], op.as_json()) is None


def test_an_entry_for_a_child_no_worker_holds_is_removed_at_its_own_version() -> None:
    urn = "urn:dictamesh:default:customer:1"
    [found] = differences([], [IndexEntry(RELATION.name, urn, "99", 5, True)])
    assert (found.kind, found.record_version) == (Kind.EXTRA, None)
    op = found.repair()
    assert op is not None
    assert (op.version, op.present) == (5, False)
    assert "no record" in found.describe()


def test_children_with_the_same_id_in_two_tenants_are_two_children(
    sample_domain: DomainConfig,
) -> None:
    # Invoice 7 of each tenant points at its own tenant's customer 1.
    children, entries = [], []
    for tenant in ("default", "beta"):
        after = record(7, 3, "1", False, tenant)
        [op] = relation_ops(sample_domain, [RELATION], None, after)
        assert op.parent == f"urn:dictamesh:{tenant}:customer:1"
        children.append(ChildRef(RELATION.name, "7", 3, op.parent, tenant))
        entries.append(IndexEntry(RELATION.name, op.parent, "7", 3, True))
    assert differences(children, entries) == []
    # Without beta's entry, exactly beta's parent misses it (default's is not confused).
    [missing] = differences(children, entries[:1])
    assert (missing.kind, missing.parent) == (Kind.MISSING, "urn:dictamesh:beta:customer:1")


def test_only_differences_two_scans_agree_on_are_confirmed() -> None:
    urn = "urn:dictamesh:default:customer:1"
    moving = Difference(Kind.MISSING, RELATION.name, urn, "1", 4, urn, None)
    stuck = Difference(Kind.EXTRA, RELATION.name, urn, "2", 3, None, (2, True))
    moved = Difference(Kind.MISSING, RELATION.name, urn, "1", 5, urn, None)
    assert confirmed([moving, stuck], [moved, stuck]) == [stuck]


def repair_op(**change: Any) -> dict[str, Any]:
    op = {"relation": "customer.invoices", "parent": "p", "member": "1", "version": 3,
          "present": False}  # fmt: skip
    return {**op, **change}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "the body must be"),
        ({"ops": [{"relation": "customer.invoices"}]}, "op 0: needs"),
        ({"ops": [repair_op(relation="x.y")]}, "unknown relation"),
        ({"ops": [repair_op(version="1")]}, "version must be"),
        ({"ops": [repair_op(version=True)]}, "version must be"),
        ({"ops": [repair_op(present=1)]}, "present must be"),
    ],
)
def test_repair_requests_are_checked(body: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_repairs(body, {"customer.invoices"})


def test_a_valid_repair_request_becomes_repair_ops() -> None:
    [op] = parse_repairs({"ops": [repair_op()]}, {"customer.invoices"})
    assert op == RelationOp("customer.invoices", "p", "1", 3, False, repair=True)
