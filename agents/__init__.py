"""Faust agents. Each module registers its agents on the app of a MeshContext."""

from mesh.context import MeshContext

__all__ = ["register_agents"]


def register_agents(context: MeshContext) -> None:
    """Register every agent of DictaMesh on ``context.app``.

    The foundation registers none yet: source adapters and catalog agents add theirs here.
    """
    del context
