"""The catalog on the fleet: every worker folds the events of the partitions it owns."""

from __future__ import annotations

import asyncio
from typing import ClassVar

from mesh.catalog.fold import reverse_relations
from mesh.catalog.ingest import CatalogIngestor
from mesh.catalog.metrics import CatalogMetrics
from mesh.codec import RegistryClient, build_codecs
from mesh.context import MeshContext
from mesh.deadletter import dead_letter_topic
from mesh.runtime.services import Service, add_service
from mesh.schemas import load_event_schemas


class CatalogService(Service):
    """Runs the catalog ingestor for as long as the worker runs."""

    ingestor: ClassVar[CatalogIngestor]

    def __post_init__(self) -> None:
        self._ran = asyncio.Event()

    async def on_start(self) -> None:
        await self.ingestor.start()
        self.ingestor.context.membership.on_revoked(self._on_revoked)

    async def _on_revoked(self, revoked: set[tuple[str, int]]) -> None:
        await self.ingestor.revoke()

    async def drain(self) -> None:
        self.ingestor.drain()
        await self._ran.wait()

    async def on_stop(self) -> None:
        await self.ingestor.stop()

    @Service.task
    async def _ingest(self) -> None:
        try:
            await self.ingestor.run(lambda: self.should_stop)
        finally:
            self._ran.set()


def register_catalog_agents(context: MeshContext) -> None:
    """Subscribe the catalog topics and run the ingestor on ``context.app``."""
    relations = reverse_relations(context.domain)
    registry = RegistryClient.from_settings(context.settings)
    schemas = load_event_schemas(context.domain, context.settings.schemas_dir)
    ingestor = CatalogIngestor(
        context,
        relations,
        build_codecs(context.domain, schemas, registry),
        registry,
        dead_letter_topic(context.settings.app_id),
        CatalogMetrics(context.metrics),
    )
    ingestor.subscribe()

    class _Catalog(CatalogService):
        pass

    _Catalog.ingestor = ingestor
    add_service(context.app, _Catalog)
