"""The Postgres mirror on the fleet: a service of every worker, when a database is set.

Each worker's mirror consumer joins the ``<app_id>-mirror`` group, so the entity topics'
partitions are split between the workers' mirrors independently of Faust's assignment.
"""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from mesh.context import MeshContext
from mesh.mirror import MirrorConsumer, build_mirror
from mesh.runtime.services import Service, add_service

log = logging.getLogger(__name__)


class MirrorService(Service):
    """Runs the mirror consumer for as long as the worker runs."""

    mirror: ClassVar[MirrorConsumer]

    def __post_init__(self) -> None:
        self._draining = False
        self._ran = asyncio.Event()

    async def on_start(self) -> None:
        # Postgres is not touched here: the first batch connects (and migrates), retrying
        # while it is down, so a missing database never delays the worker's start.
        await self.mirror.start()

    async def drain(self) -> None:
        # run() notices within one fetch (half a second), stores and commits its last batch.
        self._draining = True
        await self._ran.wait()

    async def on_stop(self) -> None:
        await self.mirror.stop()

    @Service.task
    async def _mirror(self) -> None:
        try:
            await self.mirror.run(lambda: self._draining or bool(self.should_stop))
        finally:
            self._ran.set()


def register_mirror(context: MeshContext) -> None:
    """Run the mirror as a service of ``context.app`` when ``MESH_DATABASE_URL`` is set.

    The mirror is built here, so a domain config it cannot mirror (a field named like a
    metadata column) stops the worker before it starts, with one configuration error.
    """
    if context.settings.database_url is None:
        log.info("postgres mirror off: MESH_DATABASE_URL is not set")
        return

    class _Mirror(MirrorService):
        pass

    _Mirror.mirror = build_mirror(
        context.settings, context.domain, context.metrics, slo=context.slo
    )
    add_service(context.app, _Mirror)
