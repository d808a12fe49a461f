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

from mesh.catalog import record
from mesh.catalog.fold import ReverseRelation
from mesh.context import CatalogStores, MeshContext
from mesh.runtime.store import PartitionStore, declare_store


def entity_table_name(entity_type: str) -> str:
    """Name of the table holding the records of ``entity_type``."""
    return f"entities_{entity_type}"


def relation_table_name(relation: ReverseRelation) -> str:
    """Name of the table indexing ``relation`` (e.g. ``relations_customer_invoices``)."""
    return "relations_" + relation.name.replace(".", "_")


def member_key(parent: bytes, member: str) -> bytes:
    """The key of one member of a parent's relation: each member is its own record, so a
    change costs the same whether the parent has two children or two thousand."""
    return parent + b"\x00" + member.encode()


def read_members(store: PartitionStore, partition: int, parent: bytes) -> list[tuple[str, Any]]:
    """``(member id, [version, present])`` of every member of ``parent``."""
    prefix = parent + b"\x00"
    return [
        (key[len(prefix) :].decode(), record.loads(value))
        for key, value in store.items(partition, prefix)
    ]


def declare_catalog_tables(context: MeshContext, relations: list[ReverseRelation]) -> CatalogStores:
    """Declare the entity and relation tables on ``context.app``."""
    stores = CatalogStores()

    def declare(name: str) -> PartitionStore:
        return declare_store(
            context.app,
            context.membership,
            name,
            partitions=context.settings.topic_partitions,
            options=context.table_options(),
            help=f"Catalog table {name}.",
        )

    for entity_type in context.domain.entities:
        stores.entities[entity_type] = declare(entity_table_name(entity_type))
    for relation in relations:
        stores.relations[relation.name] = declare(relation_table_name(relation))
    return stores
