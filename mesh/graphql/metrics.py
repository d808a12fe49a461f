"""Prometheus metrics of the GraphQL endpoint."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

KINDS = ("local", "remote", "standby")


class GraphQLMetrics:
    """The GraphQL endpoint's metrics, registered on one worker's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "dictamesh_graphql_requests",
            "GraphQL requests executed, by outcome (ok, or errors when any error was returned).",
            ["outcome"],
            registry=registry,
        )
        self.batches = Counter(
            "dictamesh_graphql_batches",
            "Batched reads made by GraphQL requests: local (this worker's RocksDB partitions) "
            "or remote (one POST to the owning worker's internal entities endpoint), or "
            "standby (this worker's replica, when the owner did not answer).",
            ["kind"],
            registry=registry,
        )
        self.keys = Counter(
            "dictamesh_graphql_batch_keys",
            "Keys (entities and relation indexes) read through those batches.",
            ["kind"],
            registry=registry,
        )
        self.executions = Counter(
            "dictamesh_graphql_executions",
            "GraphQL operations executed, by executor: plan (compiled once per query, see "
            "mesh.graphql.plan) or general (graphql-core's, for what no plan covers).",
            ["executor"],
            registry=registry,
        )
        # Resolved once: looking a labelled child up costs more than counting with it.
        self.ok = self.requests.labels(outcome="ok")
        self.failed = self.requests.labels(outcome="errors")
        self.planned = self.executions.labels(executor="plan")
        self.general = self.executions.labels(executor="general")
        self._batches = {kind: self.batches.labels(kind=kind) for kind in KINDS}
        self._keys = {kind: self.keys.labels(kind=kind) for kind in KINDS}

    def batch(self, kind: str, keys: int) -> None:
        """Count one batch of ``keys`` keys (``kind``: one of :data:`KINDS`)."""
        self._batches[kind].inc()
        self._keys[kind].inc(keys)
