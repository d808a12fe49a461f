"""The catalog's tables: one per entity type (key: URN, value: entity record) and one per
reverse relation (key: the parent's URN, value: its members).

All are RocksDB-backed and changelogged, co-partitioned with the entity topics: the key
``urn:…:customer:7`` lives in the same partition number of ``customers…entity_changed``,
of ``entities_customer`` and of ``relations_customer_invoices``, so one worker owns the
customer, its record and its invoice index. They are written by the catalog ingestor
(``mesh.catalog.ingest``) in batches, below Faust's per-event stream machinery.
"""

from __future__ import annotations

from typing import Any

import faust

from mesh.catalog import record
from mesh.catalog.fold import ReverseRelation
from mesh.context import MeshContext


def entity_table_name(entity_type: str) -> str:
    """Name of the table holding the records of ``entity_type``."""
    return f"entities_{entity_type}"


def relation_table_name(relation: ReverseRelation) -> str:
    """Name of the table indexing ``relation`` (e.g. ``relations_customer_invoices``)."""
    return "relations_" + relation.name.replace(".", "_")


def partition_db(table: faust.Table[bytes, bytes], partition: int) -> Any:
    """The RocksDB database of one table partition.

    Faust's store API resolves partitions from the event being processed; the catalog
    reads and writes across events (batches, REST), so it addresses the database directly.
    """
    return table.data._db_for_partition(partition)  # type: ignore[attr-defined]


def member_key(parent: bytes, member: str) -> bytes:
    """The key of one member of a parent's relation: each member is its own record, so a
    change costs the same whether the parent has two children or two thousand."""
    return parent + b"\x00" + member.encode()


def read_members(db: Any, parent: bytes) -> list[tuple[str, Any]]:
    """``(member id, [version, present])`` of every member of ``parent`` in ``db``."""
    prefix = parent + b"\x00"
    found: list[tuple[str, Any]] = []
    for key, value in db.items(from_key=prefix):
        if not key.startswith(prefix):
            break
        found.append((key[len(prefix) :].decode(), record.loads(value)))
    return found


def declare_catalog_tables(context: MeshContext, relations: list[ReverseRelation]) -> None:
    """Declare the entity and relation tables on ``context.app``."""
    app = context.app
    names = [entity_table_name(t) for t in context.domain.entities]
    names += [relation_table_name(r) for r in relations]
    for name in names:
        context.tables[name] = app.Table(
            name,
            default=None,
            partitions=context.settings.topic_partitions,
            key_type=bytes,
            value_type=bytes,
            options=context.table_options(),
            help=f"Catalog table {name}.",
        )
