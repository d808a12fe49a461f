"""The Faust app factory: one call builds a worker's app with its tables, agents and views."""

from __future__ import annotations

import faust

from mesh.context import MeshContext
from mesh.domain import DomainConfig, load_domain
from mesh.end_offsets import install_verified_end_offsets
from mesh.settings import Settings


class MeshApp(faust.App):  # type: ignore[misc]
    """A Faust app that carries its :class:`~mesh.context.MeshContext` as ``mesh``."""

    mesh: MeshContext


def create_app(settings: Settings, domain: DomainConfig | None = None) -> MeshApp:
    """Build a Faust app for ``settings`` and register DictaMesh's tables, agents and views.

    ``domain`` defaults to the file at ``settings.domain_config``. The app's
    :class:`~mesh.context.MeshContext` is reachable as ``app.mesh``.
    """
    # Imported here so that importing mesh never imports the agent modules' dependencies.
    from agents import register_agents
    from mesh.cache.service import register_read_cache
    from mesh.web import register_views
    from tables import register_tables

    domain = domain or load_domain(settings.domain_config)
    settings.worker_dir.mkdir(parents=True, exist_ok=True)
    app = MeshApp(
        settings.app_id,
        broker=settings.broker_url,
        store="rocksdb://",
        datadir=str(settings.worker_dir),
        autodiscover=False,
        # Raw bytes keys everywhere: topic, table and router must hash the same bytes,
        # or table_route sends requests to the wrong worker.
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        table_standby_replicas=1,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_session_timeout=settings.rebalance_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.rebalance_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=True,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        web_host=settings.web_host,
        logging_config=None,
    )
    context = MeshContext(settings=settings, domain=domain, app=app)
    app.mesh = context
    install_verified_end_offsets(app, settings.bootstrap_servers)
    register_read_cache(context)
    register_tables(context)
    register_agents(context)
    register_views(context)
    return app
