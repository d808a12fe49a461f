"""HTTP views served by each worker's web server."""

from mesh.context import MeshContext
from mesh.web.catalog import register_catalog_views
from mesh.web.health import register_health_views
from mesh.web.metrics import register_metrics_view

__all__ = ["register_views"]


def register_views(context: MeshContext) -> None:
    """Register every view of DictaMesh on ``context.app``."""
    # Imported here: mesh.graphql reads through mesh.web.entities, so importing it while
    # this package initialises would be circular.
    from mesh.web.graphql import register_graphql_views
    from mesh.web.internal_entities import (
        register_internal_entities_view,
        register_internal_scan_view,
    )
    from mesh.web.relations_check import register_relations_check_views

    register_health_views(context)
    register_metrics_view(context)
    register_catalog_views(context)
    register_internal_entities_view(context)
    register_internal_scan_view(context)
    register_relations_check_views(context)
    register_graphql_views(context)
