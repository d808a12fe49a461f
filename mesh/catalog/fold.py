"""Folding change events into entity records and relation indexes: pure functions.

Every write is guarded by the entity version (the source position): an event that is not
newer than what is stored changes nothing, so duplicates and replays are harmless.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from mesh.catalog.record import EntityRecord, MemberEntry
from mesh.domain import DomainConfig


class RelationOp(NamedTuple):
    """Add or remove ``member`` in the ``relation`` index of the entity ``parent`` (a URN).

    A named tuple: the catalog makes one per relation change of every event it folds, and
    a frozen dataclass costs several times as much to build."""

    relation: str
    parent: str
    member: str
    version: int
    present: bool
    repair: bool = False
    """Made by the relation check from the child's record: it also replaces an entry of
    the same version (which the record contradicts), never a newer one."""

    def as_json(self) -> dict[str, Any]:
        """The op as sent on the relations topic (keyed by ``parent``)."""
        op = {
            "relation": self.relation,
            "member": self.member,
            "version": self.version,
            "present": self.present,
        }
        if self.repair:
            op["repair"] = True
        return op


@dataclass(frozen=True)
class ReverseRelation:
    """``<parent type>.<name>``: children of ``child_type`` whose ``field`` holds the parent id."""

    name: str
    parent_type: str
    child_type: str
    field: str


def reverse_relations(domain: DomainConfig) -> list[ReverseRelation]:
    """Every reverse relation of the domain config."""
    return [
        ReverseRelation(f"{parent}.{name}", parent, rel.entity, rel.field)
        for parent, entity in domain.entities.items()
        for name, rel in entity.reverse_relations.items()
    ]


def fold(
    existing: EntityRecord | None,
    event: dict[str, Any],
    urn: str,
    schema: dict[str, Any],
) -> EntityRecord | None:
    """The record after ``event``, or ``None`` when the event is not newer than ``existing``."""
    source = event["source"]
    version = int(source["position"])
    if existing is not None and version <= int(existing["version"]):
        return None
    deleted = event["op"] == "DELETE"
    if deleted:
        state = existing["state"] if existing is not None else {}
    else:
        state = dict(event["after"] or {})
    changed_at: datetime = source.get("timestamp") or event["occurred_at"]
    return {
        "urn": urn,
        "tenant": event["tenant"],
        "type": event["entity_type"],
        "id": event["entity_id"],
        "version": version,
        "deleted": deleted,
        "op": event["op"],
        "event_id": event["event_id"],
        "first_seen": existing["first_seen"] if existing is not None else changed_at,
        "last_changed": changed_at,
        "source": {
            "system": source["system"],
            "instance": source["instance"],
            "collection": source["collection"],
            "position": version,
            "timestamp": source.get("timestamp"),
        },
        "schema": schema,
        "changed_fields": list(event.get("changed_fields") or []),
        "state": state,
    }


def relation_ops(
    domain: DomainConfig,
    relations: list[ReverseRelation],
    before: EntityRecord | None,
    after: EntityRecord,
) -> list[RelationOp]:
    """Index changes implied by ``before`` → ``after`` of one child entity.

    A child re-pointed to another parent leaves the old parent's index and joins the new
    one; a deleted child leaves its parent's index.
    """
    ops: list[RelationOp] = []
    version = int(after["version"])
    member = str(after["id"])
    tenant = after["tenant"]  # a child only ever points at parents of its own tenant
    child_type = after["type"]
    old_state = None if before is None or before["deleted"] else before["state"]
    new_state = None if after["deleted"] else after["state"]
    for rel in relations:
        if rel.child_type != child_type:
            continue
        old = None if old_state is None else old_state.get(rel.field)
        new = None if new_state is None else new_state.get(rel.field)
        if old == new:
            continue
        if old is not None:
            parent = domain.urn(tenant, rel.parent_type, str(old))
            ops.append(RelationOp(rel.name, parent, member, version, False))
        if new is not None:
            parent = domain.urn(tenant, rel.parent_type, str(new))
            ops.append(RelationOp(rel.name, parent, member, version, True))
    return ops


def apply_op(entry: MemberEntry | None, op: dict[str, Any]) -> MemberEntry | None:
    """The member's entry after ``op``, or ``None`` when the op is not newer for it.

    Removed members stay as ``[version, false]`` so an older add arriving late cannot
    bring them back. A repair (see :mod:`mesh.catalog.consistency`) also replaces an entry
    of its own version.
    """
    return member_entry(entry, int(op["version"]), bool(op["present"]), bool(op.get("repair")))


def member_entry(
    entry: MemberEntry | None, version: int, present: bool, repair: bool = False
) -> MemberEntry | None:
    """:func:`apply_op` of an op given by its fields."""
    if entry is not None:
        stored = int(entry[0])
        if version < stored or (version == stored and not repair):
            return None
    return [version, present]


def present_members(entries: Iterable[tuple[str, MemberEntry]]) -> list[str]:
    """Ids currently in the relation, in a stable order."""
    members = [m for m, (_, present) in entries if present]
    return sorted(members, key=lambda m: (len(m), m))
