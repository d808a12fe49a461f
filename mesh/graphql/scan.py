"""Listing the entities of one type over the whole fleet, for the GraphQL list fields.

There is no index by anything but the URN, so a page is a scan: every worker reads the
records of the partitions it actively owns (``POST /api/v1/internal/scan``), keeps the
live ones matching the equality filter whose id sorts after the cursor, and answers the
first ``limit``; the worker serving the request merges the answers. That is O(entities)
per page and per worker: fine for the catalog's sizes and admin use, not for hot paths.

Order: by id, shorter ids first, so integer ids come in numeric order (as relation
members do). The cursor is the last id of a page, base64-encoded to stay opaque.
"""

from __future__ import annotations

import base64
import binascii
from decimal import Decimal, InvalidOperation
from typing import Any

from mesh.catalog import record
from mesh.catalog.reader import CatalogReader
from mesh.domain import FieldType
from mesh.errors import UnavailableError

INTERNAL_SCAN_PATH = "/api/v1/internal/scan"

Record = dict[str, Any]


def sort_key(entity_id: str) -> tuple[int, str]:
    """The list order of an id: shorter first, so canonical integers sort numerically."""
    return (len(entity_id), entity_id)


def encode_cursor(entity_type: str, entity_id: str) -> str:
    """The opaque cursor after the entity ``entity_id``."""
    return base64.urlsafe_b64encode(f"{entity_type}:{entity_id}".encode()).decode()


def decode_cursor(entity_type: str, cursor: str) -> str:
    """The id a cursor of ``entity_type`` points after; ``ValueError`` if it is not one."""
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (binascii.Error, UnicodeError):
        raise ValueError(f"invalid cursor {cursor!r}") from None
    kind, sep, entity_id = text.partition(":")
    if not sep or kind != entity_type:
        raise ValueError(f"invalid cursor {cursor!r} for {entity_type}")
    return entity_id


def _equal(field_type: FieldType | None, stored: Any, wanted: Any) -> bool:
    if stored is None or wanted is None:
        return stored is wanted
    if field_type is FieldType.DECIMAL:
        try:
            return Decimal(str(stored)) == Decimal(str(wanted))
        except InvalidOperation:
            return False
    if field_type is None or isinstance(wanted, str):  # ids and references come as strings
        return str(stored) == str(wanted)
    return bool(stored == wanted)


def matches(reader: CatalogReader, rec: Record, where: dict[str, Any]) -> bool:
    """True for a live record whose state equals ``where`` on every given field."""
    if rec.get("deleted"):
        return False
    spec = reader.domain.entities[rec["type"]]
    for name, wanted in where.items():
        if name == spec.key:  # the id as in the URN, given as an ID (a string)
            if rec["id"] != str(wanted):
                return False
            continue
        field = spec.fields.get(name)
        if field is None:
            return False
        # Forward references are filtered by the referenced id, given as an ID string.
        field_type = None if field.references else field.type
        if not _equal(field_type, rec["state"].get(name), wanted):
            return False
    return True


def scan_local(
    reader: CatalogReader,
    tenant: str,
    entity_type: str,
    where: dict[str, Any],
    after: str | None,
    limit: int,
) -> dict[str, Any]:
    """This worker's part of a page of ``tenant``'s entities: ``{"partitions": [...],
    "records": [...]}``."""
    if reader.recovering():
        raise UnavailableError("this worker is recovering its tables; retry")
    table = reader.table(entity_type)
    floor = None if after is None else sort_key(after)
    # Keys are URNs: the tenant's share this prefix, so others' records are never read.
    prefix = reader.domain.urn(tenant, entity_type, "").encode()
    found: list[Record] = []
    partitions = table.owned()
    for partition in partitions:
        for _, value in table.items(partition, prefix):
            rec: Record = record.loads(value)
            if floor is not None and sort_key(rec["id"]) <= floor:
                continue
            if matches(reader, rec, where):
                found.append(rec)
    found.sort(key=lambda r: sort_key(r["id"]))
    return {"partitions": partitions, "records": found[:limit]}


async def scan_fleet(
    reader: CatalogReader,
    tenant: str,
    entity_type: str,
    where: dict[str, Any],
    after: str | None,
    limit: int,
) -> list[Record]:
    """The first ``limit`` live matching records of ``tenant`` after ``after`` over the
    whole fleet.

    Raises :class:`UnavailableError` when some partition was not scanned (a worker down or
    the fleet rebalancing): a page with holes would silently skip entities.
    """
    body = {"tenant": tenant, "type": entity_type, "where": where, "after": after, "limit": limit}
    answers = await reader.router.ask_all(INTERNAL_SCAN_PATH, method="POST", body=body)
    parts = [scan_local(reader, tenant, entity_type, where, after, limit)]
    for url, answer in answers:
        if isinstance(answer, UnavailableError):
            raise answer
        if answer.status != 200:
            raise UnavailableError(f"the worker at {url} answered {answer.status} to a scan")
        try:
            parts.append(dict(answer.json()))
        except ValueError:
            raise UnavailableError(f"the worker at {url} answered a scan with nonsense") from None
    scanned = {p for part in parts for p in part["partitions"]}
    missing = sorted(set(range(reader.context.settings.topic_partitions)) - scanned)
    if missing:
        raise UnavailableError(
            f"partitions {missing} of {entity_type} have no owner right now "
            "(the fleet is rebalancing); retry"
        )
    merged: dict[str, Record] = {}
    for part in parts:
        for rec in part["records"]:
            merged.setdefault(rec["id"], rec)  # a partition reported twice mid-rebalance
    return sorted(merged.values(), key=lambda r: sort_key(r["id"]))[:limit]
