"""What every agent, table and view of one worker shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from mesh.cache import ReadCache
from mesh.domain import DomainConfig
from mesh.observability.slo import SloMetrics
from mesh.runtime.app import App
from mesh.runtime.keyed_table import KeyedTable
from mesh.runtime.membership import Membership
from mesh.runtime.store import PartitionStore
from mesh.settings import Settings


@dataclass
class CatalogStores:
    """The catalog's tables of one worker."""

    entities: dict[str, PartitionStore] = field(default_factory=dict)
    """By entity type."""
    relations: dict[str, PartitionStore] = field(default_factory=dict)
    """By relation name (``customer.invoices``)."""

    def by_name(self) -> dict[str, PartitionStore]:
        """Every table by its name."""
        return {s.name: s for s in (*self.entities.values(), *self.relations.values())}


@dataclass
class MeshContext:
    """The worker's settings, domain, metrics registry, tables and group view.

    One is built per worker by :func:`mesh.app.create_app`; nothing here is global, so
    tests can build several in one process.
    """

    settings: Settings
    domain: DomainConfig
    app: App
    metrics: CollectorRegistry = field(default_factory=CollectorRegistry)
    membership: Membership = field(init=False)
    catalog: CatalogStores = field(default_factory=CatalogStores)
    """The catalog's tables (declared by :func:`tables.register_tables`)."""
    cursors: KeyedTable | None = None
    """The source cursor table (declared by :func:`tables.register_tables`)."""
    sagas: Any = None
    """The worker's :class:`~mesh.sagas.service.Sagas` (``None`` with sagas off)."""
    cache: ReadCache | None = None
    """The GraphQL read caches; the catalog invalidates them as it writes."""
    links: Any = None
    """The worker's :class:`~mesh.catalog.links.PeerLinks` (WebSockets to the other
    workers, for GraphQL's batched reads), set by ``register_peer_links``."""
    slo: SloMetrics = field(init=False)
    """Request latency and freshness (see :mod:`mesh.observability.slo`)."""

    def __post_init__(self) -> None:
        self.membership = Membership(self.app)
        self.slo = SloMetrics(self.metrics)

    def table_options(self) -> dict[str, Any]:
        """Store options for a new table: RocksDB with the block cache capped.

        A fresh dict each call: Faust's RocksDB store pops keys out of the dict it is given.
        """
        return {
            "driver": "rocksdict",
            "block_cache_size": self.settings.rocksdb_block_cache_mb * 1024 * 1024,
            "block_cache_compressed_size": self.settings.rocksdb_block_cache_mb * 1024 * 1024,
            "write_buffer_size": self.settings.rocksdb_write_buffer_mb * 1024 * 1024,
            "max_write_buffer_number": 2,
        }
