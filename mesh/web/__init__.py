"""HTTP views served by each worker's web server."""

from mesh.context import MeshContext
from mesh.web.catalog import register_catalog_views
from mesh.web.health import register_health_views
from mesh.web.metrics import register_metrics_view

__all__ = ["register_views"]


def register_views(context: MeshContext) -> None:
    """Register every view of DictaMesh on ``context.app``."""
    register_health_views(context)
    register_metrics_view(context)
    register_catalog_views(context)
