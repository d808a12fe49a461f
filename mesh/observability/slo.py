"""The metrics the service level objectives are computed from (see the README's SLOs).

- ``dictamesh_request_duration_seconds{api, operation, outcome}``: every GraphQL and REST
  request, by operation class (never by raw query: bounded cardinality); availability is
  the share of ``outcome="server_error"``.
- ``dictamesh_freshness_seconds{stage}``: from a change's source timestamp to the moment it
  is applied in the catalog (``catalog``: queryable) or written to Postgres (``mirror``).
  Events without a source timestamp (snapshots of existing rows) are not observed.

Exemplars carry the trace id of the request or batch when it is traced, and are shown only
in the OpenMetrics exposition (``/metrics`` with ``Accept: application/openmetrics-text``).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

from mesh.observability.tracing import current_exemplar

__all__ = ["FRESHNESS_BUCKETS", "REQUEST_BUCKETS", "SloMetrics"]

REQUEST_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FRESHNESS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class SloMetrics:
    """The SLO histograms of one worker's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Histogram(
            "dictamesh_request_duration_seconds",
            "GraphQL and REST requests by API, operation class (GraphQL: query, mutation, "
            "subscription, invalid; REST: entity, relations, types) and outcome (ok, "
            "client_error, server_error).",
            ["api", "operation", "outcome"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.freshness = Histogram(
            "dictamesh_freshness_seconds",
            "From a change's source timestamp to it being applied in the catalog (stage "
            "catalog: queryable) or written to the Postgres mirror (stage mirror).",
            ["stage"],
            buckets=FRESHNESS_BUCKETS,
            registry=registry,
        )
        self._lags: dict[str, dict[tuple[str, int], int]] = {}

    def partition_lag(self, consumer: str) -> dict[tuple[str, int], int]:
        """The lag per (topic, partition) a consumer other than the catalog's keeps up to
        date (the mirror's), shown as ``dictamesh_consumer_lag_records{consumer}``."""
        return self._lags.setdefault(consumer, {})

    def partition_lags(self) -> dict[str, dict[tuple[str, int], int]]:
        """Every such consumer's lags."""
        return self._lags

    def request(self, api: str, operation: str, outcome: str, seconds: float) -> None:
        """Observe one request (with the current trace as exemplar, when traced)."""
        self.requests.labels(api, operation, outcome).observe(seconds, current_exemplar())

    def fresh(self, stage: str, source_times: Iterable[float]) -> None:
        """Observe changes whose source timestamps (Unix seconds) were just applied."""
        now = time.time()
        ages = [max(now - at, 0.0) for at in source_times]
        if ages:
            _observe_all(self.freshness.labels(stage), ages, current_exemplar())


def _observe_all(histogram: Histogram, amounts: list[float], exemplar: Any) -> None:
    """``histogram.observe(amount, exemplar)`` for each of ``amounts``, counted per bucket
    first: the catalog observes every change it applies, thousands a batch, and one
    ``observe`` each cost it ~3 µs an event. Each bucket's last observation still goes
    through ``observe``, so it carries the exemplar as before. Falls back to ``observe``
    for all when the client's histogram does not look as expected."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for amount in amounts:
            histogram.observe(amount, exemplar)
        return
    counts = [0] * len(bounds)
    last: dict[int, float] = {}
    counted = 0.0
    for amount in amounts:
        index = bisect_left(bounds, amount)  # the first bucket with amount <= bound
        if index < len(bounds) and amount <= bounds[index]:
            if index in last:
                counts[index] += 1
                counted += last[index]
            last[index] = amount
        else:  # NaN: as observe does, in the sum and in no bucket
            histogram.observe(amount, exemplar)
    if counted:
        total.inc(counted)
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)
    for amount in last.values():
        histogram.observe(amount, exemplar)
