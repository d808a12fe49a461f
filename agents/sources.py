"""Source adapters on the fleet: each source is polled by exactly one worker at a time.

A source belongs to the worker that actively owns its cursor's changelog partition, so
Kafka's group assignment decides, a dead worker's sources move with its partitions, and
three workers never triple the events. On revocation the runner finishes its round and
the producer is flushed before the partition changes hands, so the next owner recovers
the newest cursor from the changelog. Every worker with sources reads the re-read
requests of dead-letter replays (:mod:`mesh.sources.rereads`); the owner of a source
carries out its own.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any, ClassVar

from mesh.catalog.children import children_lookup
from mesh.catalog.reader import CatalogReader
from mesh.codec import RegistryClient, build_codecs
from mesh.context import MeshContext
from mesh.deadletter import dead_letter_topic
from mesh.runtime.kafka import KafkaConnection
from mesh.runtime.services import Service, add_service
from mesh.schemas import load_event_schemas
from mesh.sources.kinds import create_adapter
from mesh.sources.metrics import AdapterState, SourceMetrics
from mesh.sources.publish import EventPublisher
from mesh.sources.rereads import RereadInbox, reread_topic
from mesh.sources.runner import SourceRunner
from mesh.tables.cursors import CursorStore, cursor_partition

log = logging.getLogger(__name__)

RESTART_AFTER_S = 10.0
"""How long an owned source whose loop stopped on an error waits before it starts again."""


class SourceSupervisor(Service):
    """Starts a runner for every source this worker owns and stops those it loses."""

    context: ClassVar[MeshContext]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        ctx = self.context
        self.metrics = SourceMetrics(ctx.metrics)
        assert ctx.cursors is not None, "register_tables() declares the cursor table first"
        self.cursors = CursorStore(ctx.cursors)
        self.runners: dict[str, SourceRunner] = {}
        self._draining = False
        self._not_before: dict[str, float] = {}
        schemas = load_event_schemas(ctx.domain, ctx.settings.schemas_dir)
        registry = RegistryClient.from_settings(ctx.settings)
        # Per tenant: with topic_per_tenant each tenant's events have their own subjects.
        self.codecs = {
            tenant: build_codecs(ctx.domain, schemas, registry, tenant)
            for tenant in ctx.domain.tenants
        }
        for spec in ctx.domain.sources:
            self.metrics.set_state(spec.name, AdapterState.STOPPED)
            if not spec.enabled:
                log.info("source %s (tenant %s) is disabled in the domain config", spec.name,
                         spec.tenant)  # fmt: skip
        self.children = children_lookup(CatalogReader(ctx))
        """What points at an entity (for adapters whose source does not say), per the catalog."""
        self.rereads: RereadInbox | None = None
        if any(spec.enabled for spec in ctx.domain.sources):
            self.rereads = RereadInbox(
                KafkaConnection.from_settings(ctx.settings),
                reread_topic(ctx.settings.app_id),
                declare=ctx.settings.topic_declare,
                replication_factor=ctx.settings.replication_factor,
            )

    async def on_start(self) -> None:
        self.context.membership.on_revoked(self._on_revoked)
        if self.rereads is not None:
            self.rereads.start()

    async def drain(self) -> None:
        # Each runner finishes its round (publish + cursor) and the cursors are flushed.
        self._draining = True
        await self._stop(list(self.runners))

    async def on_stop(self) -> None:
        await self._stop(list(self.runners))
        if self.rereads is not None:
            await self.rereads.stop()

    @Service.task
    async def _reconcile_forever(self) -> None:
        while not self.should_stop and not self._draining:
            await self._reconcile()
            await self.sleep(0.25)

    def _owned(self) -> set[str]:
        membership = self.context.membership
        if not membership.ready() or membership.recovering():
            return set()
        active = membership.active(self.cursors.changelog_topic)
        partitions = self.context.settings.topic_partitions
        return {
            spec.name
            for spec in self.context.domain.sources
            if spec.enabled and cursor_partition(spec.name, partitions) in active
        }

    async def _reconcile(self) -> None:
        owned = self._owned()
        now = time.monotonic()
        for name, runner in list(self.runners.items()):
            if runner.done and name in owned:
                self._not_before[name] = now + RESTART_AFTER_S
            if runner.done or name not in owned:
                await self._stop([name])
        for name in sorted(owned - set(self.runners)):
            if now >= self._not_before.get(name, 0.0) and not self._draining:
                self._start(name)

    def _start(self, name: str) -> None:
        ctx = self.context
        spec = ctx.domain.source(name)
        adapter = create_adapter(spec, ctx.domain)
        adapter.children = functools.partial(self.children, spec.tenant)
        codecs = {t: self.codecs[spec.tenant][t] for t in adapter.entities}
        publisher = EventPublisher(
            ctx.app, ctx.domain, spec, codecs, dead_letter_topic(ctx.settings.app_id), self.metrics
        )
        runner = SourceRunner(adapter, publisher, self.cursors, self.metrics, rereads=self.rereads)
        log.info("polling source %s on this worker", name)
        self.runners[name] = runner
        runner.start()

    async def _stop(self, names: list[str]) -> None:
        for name in names:
            runner = self.runners.pop(name, None)
            if runner is not None:
                await runner.stop()
        if names:
            # The next owner recovers cursors from the changelog: get them there first.
            await self.context.app.producer.flush()

    async def _on_revoked(self, revoked: set[tuple[str, int]]) -> None:
        topic = self.cursors.changelog_topic
        partitions = self.context.settings.topic_partitions
        await self._stop(
            [
                name
                for name in self.runners
                if (topic, cursor_partition(name, partitions)) in revoked
            ]
        )


def register_source_agents(context: MeshContext) -> None:
    """Run the source supervisor as a service of ``context.app``."""

    class _Supervisor(SourceSupervisor):
        pass

    _Supervisor.context = context
    add_service(context.app, _Supervisor)
