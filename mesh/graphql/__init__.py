"""Federated GraphQL over the catalog tables.

:func:`build_schema` turns the domain config into a graphene schema; each request gets a
:class:`Loader` that batches its reads per owning worker (local RocksDB partitions, or one
request per other owner to ``/api/v1/internal/entities``). The HTTP side is
``mesh.web.graphql``.
"""

from mesh.errors import UnavailableError
from mesh.graphql.loader import INTERNAL_ENTITIES_PATH, BatchRecord, Loader
from mesh.graphql.metrics import GraphQLMetrics
from mesh.graphql.reads import Key, LocalReads
from mesh.graphql.schema import build_schema

__all__ = [
    "INTERNAL_ENTITIES_PATH",
    "BatchRecord",
    "GraphQLMetrics",
    "Key",
    "Loader",
    "LocalReads",
    "UnavailableError",
    "build_schema",
]
