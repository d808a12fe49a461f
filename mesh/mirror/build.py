"""Assembling a mirror from settings: codecs, decoder, writer, metrics and consumer."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from mesh.codec import RegistryClient, build_codecs
from mesh.deadletter import dead_letter_topic
from mesh.domain import DomainConfig
from mesh.mirror.consumer import MirrorConsumer
from mesh.mirror.decode import MirrorDecoder
from mesh.mirror.metrics import MirrorMetrics
from mesh.mirror.tables import mirror_tables
from mesh.mirror.writer import MirrorWriter
from mesh.observability.slo import SloMetrics
from mesh.retry import RetryPolicy
from mesh.runtime.kafka import KafkaConnection
from mesh.schemas import load_event_schemas
from mesh.settings import Settings

__all__ = ["build_mirror", "mirror_group"]


def mirror_group(app_id: str) -> str:
    """The mirror's consumer group: its position is its own, not the Faust app's."""
    return f"{app_id}-mirror"


def build_mirror(
    settings: Settings,
    domain: DomainConfig,
    metrics: CollectorRegistry,
    *,
    write: bool = True,
    group_id: str | None = None,
    retry: RetryPolicy | None = None,
    lag_interval_s: float = 1.0,
    slo: SloMetrics | None = None,
) -> MirrorConsumer:
    """A mirror of ``domain``'s entity topics into ``settings.database_url`` (not started).

    ``write=False`` builds the same consumer without a database (nothing is written;
    ``settings.database_url`` may be unset). Raises :class:`~mesh.errors.ConfigError` when
    the config or schemas are invalid for the mirror.
    """
    tables = mirror_tables(domain)
    writer: MirrorWriter | None = None
    if write:
        if settings.database_url is None:
            raise ValueError("the mirror needs settings.database_url to write")
        writer = MirrorWriter(settings.database_url.get_secret_value(), tables)
    registry = RegistryClient.from_settings(settings)
    schemas = load_event_schemas(domain, settings.schemas_dir)
    decoder = MirrorDecoder(domain, tables, build_codecs(domain, schemas, registry), registry)
    return MirrorConsumer(
        kafka=KafkaConnection.from_settings(settings),
        group_id=group_id or mirror_group(settings.app_id),
        decoder=decoder,
        writer=writer,
        metrics=MirrorMetrics(metrics),
        dead_letter_topic=dead_letter_topic(settings.app_id),
        retry=retry,
        rebalance_timeout_s=settings.rebalance_timeout_s,
        lag_interval_s=lag_interval_s,
        slo=slo,
    )
