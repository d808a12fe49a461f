"""HTTP views served by each worker's web server: faces over the catalog and GraphQL."""

from mesh.context import MeshContext
from mesh.observability.requests import observe_requests
from mesh.runtime.web import web_application
from mesh.web.auth import register_auth
from mesh.web.cache_peers import register_cache_peer_views
from mesh.web.catalog import register_catalog_views
from mesh.web.graphql import register_graphql_views
from mesh.web.health import register_health_views
from mesh.web.internal_entities import register_internal_entities_view, register_internal_scan_view
from mesh.web.metrics import register_metrics_view
from mesh.web.relations_check import register_relations_check_views
from mesh.web.sagas import register_saga_views

__all__ = ["register_views"]


def register_views(context: MeshContext) -> None:
    """Register every view of DictaMesh on ``context.app``, behind the token gate."""
    register_auth(context)
    register_health_views(context)
    register_metrics_view(context)
    register_catalog_views(context)
    register_internal_entities_view(context)
    register_internal_scan_view(context)
    register_cache_peer_views(context)
    register_relations_check_views(context)
    register_saga_views(context)
    register_graphql_views(context)
    # In front of the gate: refused requests are timed (and traced) too.
    observe_requests(context.slo, web_application(context.app))
