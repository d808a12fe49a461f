"""Faust agents and services. Each module registers what it runs on a MeshContext's app."""

from mesh.agents.catalog import register_catalog_agents
from mesh.agents.mirror import register_mirror
from mesh.agents.sagas import register_sagas
from mesh.agents.sources import register_source_agents
from mesh.context import MeshContext

__all__ = ["register_agents"]


def register_agents(context: MeshContext) -> None:
    """Register every agent and service of DictaMesh on ``context.app``."""
    register_source_agents(context)
    register_catalog_agents(context)
    register_mirror(context)
    register_sagas(context)
