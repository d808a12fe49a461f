"""The read caches' part of the worker's life: the fleet generation read at start and on
every rebalance, leases on peers' changes renewed, responses forgotten on rebalance, Redis
closed on stop."""

from __future__ import annotations

from typing import Any, ClassVar

from mesh.cache.peers import PeerInvalidations
from mesh.cache.read_cache import ReadCache, build_read_cache
from mesh.catalog.router import FleetRouter
from mesh.context import MeshContext
from mesh.runtime.services import Service, add_service


class CacheService(Service):
    """Reads the fleet generation at start; clears the response cache and reads the
    generation again when partitions move; closes Redis on stop."""

    cache: ClassVar[ReadCache]
    context: ClassVar[MeshContext]

    async def on_start(self) -> None:
        self.cache.start()
        revoked = self.context.app.on_partitions_revoked
        revoked.connect(self._on_revoked)  # type: ignore[arg-type]

    async def _on_revoked(self, sender: Any, *args: Any, **kwargs: Any) -> None:
        self.cache.partitions_moved()

    async def on_stop(self) -> None:
        await self.cache.close()


def register_read_cache(context: MeshContext) -> None:
    """Build the caches the settings ask for into ``context.cache`` and run their service."""
    cache = build_read_cache(context.settings, context.metrics)
    cache.peers = PeerInvalidations(
        FleetRouter(context), cache.responses, cache.metrics, context.settings.cache_lease_s,
        me=lambda: str(context.app.conf.canonical_url),
    )  # fmt: skip
    context.cache = cache

    class _Cache(CacheService):
        pass

    _Cache.cache = cache
    _Cache.context = context
    add_service(context.app, _Cache)
