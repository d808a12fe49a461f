"""The names cached reads go by: one per table row a read depends on.

An entity read depends on its record (``entities_customer`` + URN); a relation read on
every member record of its parent (``relations_customer_invoices`` + the parent's URN).
The reader names what it read and the catalog names what it wrote the same way, so a
write invalidates exactly the reads that saw the old value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

_SEP = b"|"


def cache_key(table: str, urn: bytes) -> bytes:
    """The cache key of the row ``urn`` of ``table`` (for relations: the parent's URN)."""
    return table.encode() + _SEP + urn


def changed_keys(
    writes: Mapping[tuple[str, int], Mapping[bytes, bytes]], relation_tables: Iterable[str]
) -> set[bytes]:
    """The cache keys a batch of table writes changes (``{(table, partition): {key: value}}``).

    Relation tables key one record per member (``<parent URN>\\x00<member>``); their reads
    are per parent, so a member's write changes its parent's key.
    """
    indexes = set(relation_tables)
    changed: set[bytes] = set()
    for (table, _), values in writes.items():
        prefix = table.encode() + _SEP
        if table in indexes:
            changed.update(prefix + key.split(b"\x00", 1)[0] for key in values)
        else:
            changed.update(prefix + key for key in values)
    return changed
