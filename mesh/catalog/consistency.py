"""Relation indexes checked against the entity records they are derived from: pure logic.

A reverse relation index must list, for every parent, exactly the live children whose
reference field holds that parent. :func:`differences` compares the two as scanned from
the fleet; :func:`confirmed` keeps the differences two scans agree on (on a live fleet a
difference may be a change in flight); :meth:`Difference.repair` is the versioned relation
change that puts one right.

Repairs carry the child record's version and are marked as repairs: the owner applies one
over an index entry of the same version (which the record contradicts) but never over a
newer one, so a repair cannot undo a change made after the scan.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from mesh.catalog.fold import RelationOp
from mesh.domain import tenant_of


@dataclass(frozen=True)
class ChildRef:
    """One child record as a relation sees it: which parent its field holds now."""

    relation: str
    member: str
    version: int
    parent: str | None
    """The parent's URN, or ``None`` when the child is deleted or its field is empty."""
    tenant: str
    """The child's tenant: member ids repeat across tenants, (tenant, id) does not."""


@dataclass(frozen=True)
class IndexEntry:
    """One member entry of one parent's relation index."""

    relation: str
    parent: str
    member: str
    version: int
    present: bool


class Kind(StrEnum):
    MISSING = "missing"
    """The child points at the parent; the index does not list it."""
    EXTRA = "extra"
    """The index lists the child; the child does not point at the parent."""


@dataclass(frozen=True)
class Difference:
    """One member that is wrong in one parent's relation index."""

    kind: Kind
    relation: str
    parent: str
    member: str
    record_version: int | None
    """The child record's version (``None``: no worker holds a record of the child)."""
    record_parent: str | None
    """The parent the child's record points at (``None``: none, or deleted)."""
    entry: tuple[int, bool] | None
    """The index entry ``(version, present)``, or ``None`` when there is none."""

    def repair(self) -> RelationOp | None:
        """The relation change that corrects this member, or ``None`` when the index entry
        is newer than the child's record (the record, not the index, is behind: a repair
        would be refused by the version guard, and rightly)."""
        version = self.record_version
        if version is None:  # no record anywhere: the entry points at nothing
            version = self.entry[0] if self.entry is not None else 0
        if self.entry is not None and self.entry[0] > version:
            return None
        present = self.kind is Kind.MISSING
        return RelationOp(self.relation, self.parent, self.member, version, present, repair=True)

    def describe(self) -> str:
        """One line for an operator."""
        entry = "no entry" if self.entry is None else (
            f"entry v{self.entry[0]} {'present' if self.entry[1] else 'removed'}"
        )  # fmt: skip
        record = "no record" if self.record_version is None else f"record v{self.record_version}"
        points = self.record_parent or "nothing"
        if self.kind is Kind.MISSING:
            what = f"{self.parent} does not list {self.member}, which points at it"
        else:
            what = f"{self.parent} lists {self.member}, which points at {points}"
        return f"{self.relation}: {what} ({record}, {entry})"


def differences(children: Iterable[ChildRef], entries: Iterable[IndexEntry]) -> list[Difference]:
    """Every member that the index and the child records disagree on, sorted."""
    records: dict[tuple[str, str, str], ChildRef] = {}
    for child in children:
        key = (child.relation, child.tenant, child.member)
        known = records.get(key)
        if known is None or child.version > known.version:
            records[key] = child
    index: dict[tuple[str, str, str], tuple[int, bool]] = {}
    for e in entries:
        key = (e.relation, e.parent, e.member)
        if key not in index or e.version > index[key][0]:
            index[key] = (e.version, e.present)
    found: list[Difference] = []
    for (relation, _, member), child in records.items():
        if child.parent is None:
            continue
        entry = index.get((relation, child.parent, member))
        if entry is None or not entry[1]:
            found.append(
                Difference(
                    Kind.MISSING, relation, child.parent, member, child.version, child.parent, entry
                )
            )
    for (relation, parent, member), entry in index.items():
        if not entry[1]:
            continue
        holder = records.get((relation, tenant_of(parent), member))
        if holder is None or holder.parent != parent:
            found.append(
                Difference(
                    Kind.EXTRA,
                    relation,
                    parent,
                    member,
                    None if holder is None else holder.version,
                    None if holder is None else holder.parent,
                    entry,
                )
            )
    return sorted(found, key=lambda d: (d.relation, d.parent, d.member, d.kind))


def confirmed(first: Iterable[Difference], second: Iterable[Difference]) -> list[Difference]:
    """The differences of ``second`` that ``first`` found identically (same record version
    and index entry): anything that moved between the scans was a change in flight."""
    earlier = set(first)
    return [d for d in second if d in earlier]
