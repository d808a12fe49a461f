"""``/metrics`` in the Prometheus text format (OpenMetrics, with exemplars, when the
scraper asks for it), from the worker's own registry."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.registry import Collector

from mesh import __version__
from mesh.catalog.ingest import relations_topic_name
from mesh.context import MeshContext
from mesh.runtime.restore import changelog_restore
from mesh.runtime.web import Request, Response, View
from mesh.web.health import readiness

# aiohttp refuses a charset inside content_type; Prometheus reads UTF-8 by default.
_CONTENT_TYPE = "text/plain; version=0.0.4"
_OPENMETRICS = "application/openmetrics-text; version=1.0.0"


class _WorkerCollector(Collector):
    """Reads the worker's state at scrape time instead of tracking it on every change."""

    def __init__(self, context: MeshContext) -> None:
        self.context = context
        self._relations_topic = relations_topic_name(context.settings.app_id)

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | InfoMetricFamily]:
        settings = self.context.settings
        info = InfoMetricFamily("dictamesh_build", "DictaMesh version and worker identity.")
        info.add_metric([], {"version": __version__, "worker": settings.worker_name})
        yield info
        state = readiness(self.context.membership)
        yield GaugeMetricFamily(
            "dictamesh_worker_ready",
            "1 once tables are recovered and no rebalance runs.",
            value=1.0 if state["ready"] else 0.0,
        )
        yield GaugeMetricFamily(
            "dictamesh_worker_active_partitions",
            "Partitions this worker actively owns.",
            value=float(state["active_partitions"]),
        )
        yield CounterMetricFamily(
            "dictamesh_worker_partitions_moved",
            "Active partitions this worker gained or lost in rebalances since it started "
            "(its first assignment not counted).",
            value=float(self.context.membership.moved),
        )
        yield CounterMetricFamily(
            "dictamesh_worker_rebalances",
            "Partition assignments this worker received since it started (the first one included).",
            value=float(self.context.membership.rebalances),
        )
        yield GaugeMetricFamily(
            "dictamesh_worker_recovery_remaining_records",
            "Changelog records of the active tables still to restore (0 once recovered).",
            value=float(self.context.membership.recovery_remaining()),
        )
        yield self._consumer_lag()
        yield from self._standbys()
        restore = changelog_restore(self.context.app)
        yield CounterMetricFamily(
            "dictamesh_worker_restored_records",
            "Changelog records the batched restore wrote into the tables since the worker "
            "started (a new or wiped volume rebuilt).",
            value=float(restore.records if restore else 0),
        )
        yield CounterMetricFamily(
            "dictamesh_worker_restore_seconds",
            "Time the batched restore spent rebuilding tables since the worker started.",
            value=restore.seconds if restore else 0.0,
        )

    def _consumer_lag(self) -> GaugeMetricFamily:
        lag = GaugeMetricFamily(
            "dictamesh_consumer_lag_records",
            "Records of a partition a consumer of this worker owns that are not applied "
            "and committed yet: the catalog's, and the mirror's (its own group).",
            labels=["consumer", "topic", "partition"],
        )
        if not self.context.membership.rebalancing():
            topics = {*self.context.domain.topic_types(), self._relations_topic}
            catalog = self.context.membership.consumer_lag(topics)
            for (topic, partition), n in sorted(catalog.items()):
                lag.add_metric(["catalog", topic, str(partition)], float(n))
        for consumer, kept in sorted(self.context.slo.partition_lags().items()):
            for (topic, partition), n in sorted(kept.items()):
                lag.add_metric([consumer, topic, str(partition)], float(n))
        return lag

    def _standbys(self) -> Iterator[GaugeMetricFamily]:
        lag = GaugeMetricFamily(
            "dictamesh_worker_standby_lag_records",
            "Changelog records this worker's standby replicas of a table are behind, summed "
            "over its standby partitions whose lag is known.",
            labels=["table"],
        )
        unknown = GaugeMetricFamily(
            "dictamesh_worker_standby_partitions_unknown",
            "Standby partitions of a table whose lag is not known: nothing applied yet, or "
            "their changelog's end not fetched yet.",
            labels=["table"],
        )
        # While partitions move, their databases are being closed: not opened from here.
        stores = {} if self.context.membership.rebalancing() else self.context.catalog.by_name()
        for name, store in sorted(stores.items()):
            lags = [store.standby_lag(p) for p in store.standby_partitions()]
            lag.add_metric([name], float(sum(x for x in lags if x is not None)))
            unknown.add_metric([name], float(sum(1 for x in lags if x is None)))
        yield lag
        yield unknown


def register_metrics_view(context: MeshContext) -> None:
    """Register ``/metrics`` and the collector describing the worker."""
    context.metrics.register(_WorkerCollector(context))
    registry = context.metrics

    @context.app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            # Exemplars (trace ids) exist only in OpenMetrics: served to who asks for it.
            if "application/openmetrics-text" in request.headers.get("Accept", ""):
                body: bytes = openmetrics_latest(registry)  # type: ignore[no-untyped-call]
                return self.bytes(body, content_type=_OPENMETRICS)
            return self.bytes(generate_latest(registry), content_type=_CONTENT_TYPE)
