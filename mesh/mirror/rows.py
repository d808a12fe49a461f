"""Change events as mirror rows, and collapsing a batch to the newest version per key."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from mesh.domain import DomainConfig, FieldType, tenant_of
from mesh.errors import MeshError
from mesh.mirror.tables import METADATA_COLUMNS, MirrorTable

__all__ = ["MirrorRow", "MirrorRowError", "Origin", "SchemaInfo", "collapse", "event_row"]


class MirrorRowError(MeshError):
    """A decoded event that cannot become a row (wrong entity type, undeclared tenant, a key
    that is not its URN, a payload of another entity, missing ``after``): dead-lettered."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a row came from: enough to dead-letter it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    """The record's own headers, kept in its dead letter."""


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    """The writer schema of a message: registry id, and subject and version when known."""

    schema_id: int
    subject: str | None
    version: int | None


@dataclass(frozen=True, slots=True)
class MirrorRow:
    """One event as a row of its entity type's table.

    ``typed`` holds the field values in column order, ``meta`` the metadata columns in
    :data:`~mesh.mirror.tables.METADATA_COLUMNS` order. ``has_state`` is false for a
    DELETE (its ``typed`` holds only the key): the table then keeps the stored values.
    """

    entity_type: str
    tenant: str
    key: Any
    """The key field's value: unique within the tenant, not across tenants."""
    version: int
    typed: tuple[Any, ...]
    meta: tuple[Any, ...]
    has_state: bool
    origin: Origin
    source_time: float | None = None
    """The change's source timestamp (Unix seconds), when the source gave one: freshness."""

    @property
    def values(self) -> tuple[Any, ...]:
        """Every written value, in :attr:`~mesh.mirror.tables.MirrorTable.columns` order."""
        return self.typed + self.meta


_ID_TYPES = frozenset({FieldType.STRING, FieldType.INTEGER, FieldType.LONG, FieldType.DECIMAL})
"""Key types an ``entity_id`` is parsed back into (and checked against ``after``)."""


def _key_from_id(table: MirrorTable, entity_id: str) -> Any:
    """The key value ``entity_id`` names (a DELETE has no ``after`` to read it from)."""
    try:
        match table.key_type:
            case FieldType.STRING:
                return entity_id
            case FieldType.INTEGER | FieldType.LONG:
                return int(entity_id)
            case FieldType.DECIMAL:
                return Decimal(entity_id)
    except (ValueError, InvalidOperation):
        pass
    raise MirrorRowError(
        f"cannot read the {table.key_type.value} key '{table.key}' of {table.entity_type} "
        f"from entity_id {entity_id!r}"
    )


def event_row(
    domain: DomainConfig,
    table: MirrorTable,
    event: dict[str, Any],
    schema: SchemaInfo,
    origin: Origin,
) -> MirrorRow:
    """The row ``event`` writes; :class:`MirrorRowError` when it cannot be one.

    As in the catalog, an event must be of its topic's entity type, of a tenant the domain
    declares, and keyed by its URN, so the catalog and its mirror hold the same entities.
    The row's tenant is the payload's, and the key (which partitioning and the catalog go
    by) must name that same tenant: a record keyed as one tenant's entity writes no row
    of another. Beyond the catalog's checks: with ``topic_per_tenant`` the event must be
    on its tenant's topic, and its ``after`` record must be of the entity ``entity_id``
    names (the row is keyed by the record's key field).
    """
    if event["entity_type"] != table.entity_type:
        raise MirrorRowError(
            f"event of entity type {event['entity_type']!r} on the topic of {table.entity_type}"
        )
    tenant = event["tenant"]
    if not domain.has_tenant(tenant):
        raise MirrorRowError(
            f"event for {table.entity_type} {event['entity_id']!r} is of tenant {tenant!r}, "
            f"which the domain config does not declare (declared: {domain.tenants}); "
            "add the tenant or fix the producer"
        )
    if domain.topic_per_tenant and origin.topic != domain.topic(table.entity_type, tenant):
        # Each tenant's topics are fenced by the broker's ACLs: a producer allowed on one
        # tenant's topic must not reach another tenant's rows through it.
        raise MirrorRowError(
            f"event of tenant {tenant!r} on topic {origin.topic}; with topic_per_tenant its "
            f"events belong on {domain.topic(table.entity_type, tenant)}"
        )
    urn = domain.urn(tenant, table.entity_type, event["entity_id"])
    if origin.key != urn.encode():
        raise MirrorRowError(_key_mismatch(origin.key, urn, tenant))
    after = event["after"]
    deleted = event["op"] == "DELETE"
    if after is None and not deleted:
        raise MirrorRowError(f"{event['op']} event without an 'after' record")
    if after is None:
        key = _key_from_id(table, event["entity_id"])
        typed: list[Any] = [key if c.name == table.key else None for c in table.fields]
    else:
        key = after[table.key]
        if table.key_type in _ID_TYPES and key != _key_from_id(table, event["entity_id"]):
            raise MirrorRowError(
                f"event for {table.entity_type} {event['entity_id']!r} carries the 'after' "
                f"record of {table.key} {key!r}; entity_id and the record's key must agree"
            )
        typed = [after[c.name] for c in table.fields]
    source = event["source"]
    changed_at: datetime = source["timestamp"] or event["occurred_at"]
    version = int(source["position"])
    meta = (
        urn,
        tenant,
        source["system"],
        source["instance"],
        source["collection"],
        version,
        schema.subject,
        schema.schema_id,
        schema.version,
        changed_at,  # first_seen: kept from the first insert by the upsert
        changed_at,  # last_changed
        deleted,
        event["event_id"],
    )
    at = source["timestamp"]
    return MirrorRow(
        table.entity_type, tenant, key, version, tuple(typed), meta, not deleted, origin,
        None if at is None else at.timestamp(),
    )  # fmt: skip


def _key_mismatch(key: bytes | None, urn: str, tenant: str) -> str:
    """Why an event's Kafka key is refused, naming the tenant when that is what differs."""
    text = key.decode(errors="replace") if key is not None else None
    if text is not None and text.startswith("urn:dictamesh:") and text.count(":") >= 4:
        keyed = tenant_of(text)
        if keyed != tenant:
            return (
                f"event keyed {text!r} (tenant {keyed!r}) carries a payload of tenant "
                f"{tenant!r}; the key must be its URN {urn}: a record may not write another "
                "tenant's row"
            )
    return f"event keyed {key!r}; the key must be its URN {urn}"


_FIRST_SEEN = [c.name for c in METADATA_COLUMNS].index("first_seen")
"""Where ``first_seen`` is in :attr:`MirrorRow.meta`."""


def collapse(rows: Iterable[MirrorRow]) -> list[MirrorRow]:
    """The rows of a batch that decide the table's state, for writing in the order given.

    Writing the result equals writing every row in order, whatever the table holds:

    A key is (entity type, tenant, key field): tenants' ids collide on purpose.

    - per key, only the rows that raise the newest version so far can be applied (the
      upsert replaces only a strictly older version); the last of them decides version,
      envelope and ``deleted``;
    - if that last row is a DELETE (no field values), the last such row that had values
      is kept too, *before* it: depending on the stored version it is applied (and the
      delete keeps its values) or not (and the delete keeps the stored ones);
    - every kept row carries the ``first_seen`` of the key's first row, which an insert
      would have written first.

    So a key appears at most twice, its value-carrying row first.
    """
    first: dict[tuple[str, str, Any], MirrorRow] = {}
    newest: dict[tuple[str, str, Any], MirrorRow] = {}
    with_state: dict[tuple[str, str, Any], MirrorRow] = {}
    for row in rows:
        slot = (row.entity_type, row.tenant, row.key)
        first.setdefault(slot, row)
        kept = newest.get(slot)
        if kept is None or row.version > kept.version:
            newest[slot] = row
            if row.has_state:
                with_state[slot] = row
    carriers = [
        _first_seen_of(first[slot], row)
        for slot, row in with_state.items()
        if row is not newest[slot]
    ]
    return carriers + [_first_seen_of(first[slot], row) for slot, row in newest.items()]


def _first_seen_of(first: MirrorRow, row: MirrorRow) -> MirrorRow:
    if first is row:
        return row
    meta = list(row.meta)
    meta[_FIRST_SEEN] = first.meta[_FIRST_SEEN]
    return replace(row, meta=tuple(meta))
