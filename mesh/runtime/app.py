"""The Faust app of one worker, built and checked here: the only place it is configured."""

from __future__ import annotations

import faust

from mesh.logs import faust_logging
from mesh.runtime.end_offsets import install_verified_end_offsets
from mesh.runtime.kafka import KafkaConnection, faust_credentials
from mesh.runtime.recovery import install_recovery_hooks
from mesh.runtime.restore import install_changelog_restore
from mesh.runtime.standby import keep_standbys_current
from mesh.runtime.versions import check_runtime_versions
from mesh.settings import Settings

App = faust.App
"""The worker's app, as the rest of the project names it."""


def build_faust_app(settings: Settings) -> faust.App:
    """A Faust app for ``settings``: RocksDB tables in the worker's directory, raw bytes
    keys and values, the fleet's partitions and timeouts, and the web server.

    Refuses a faust-streaming version the project has not been tested with (the delivery
    hook replaces one of its methods).
    """
    check_runtime_versions()
    install_recovery_hooks()
    settings.worker_dir.mkdir(parents=True, exist_ok=True)
    session_timeout = settings.session_timeout_s or settings.rebalance_timeout_s
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        broker_credentials=faust_credentials(settings),
        store="rocksdb://",
        datadir=str(settings.worker_dir),
        autodiscover=False,
        # Raw bytes keys everywhere: topic, table and router must hash the same bytes,
        # or requests are routed to the wrong worker.
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=settings.topic_declare,
        table_standby_replicas=1,
        broker_rebalance_timeout=settings.rebalance_timeout_s,
        broker_session_timeout=session_timeout,
        broker_heartbeat_interval=min(3.0, session_timeout / 3),
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=settings.group_instance_id,
        producer_acks=-1,
        web_enabled=True,
        web_bind=settings.web_bind,
        web_port=settings.web_port,
        web_host=settings.web_host,
        # The root logger's one handler, as the CLI made it, survives the worker's start.
        **faust_logging(settings),
    )
    kafka = KafkaConnection.from_settings(settings)
    install_verified_end_offsets(app, kafka)
    if settings.restore_batched:
        install_changelog_restore(app, kafka)
    keep_standbys_current(app)
    return app
