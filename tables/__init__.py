"""Table declarations. Each module declares its tables on the app of a MeshContext."""

from mesh.context import MeshContext
from tables.cursors import declare_cursor_table

__all__ = ["register_tables"]


def register_tables(context: MeshContext) -> None:
    """Declare every table of DictaMesh on ``context.app``."""
    declare_cursor_table(context)
