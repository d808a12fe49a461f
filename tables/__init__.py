"""Table declarations. Each module declares its tables on the app of a MeshContext."""

from mesh.catalog.fold import reverse_relations
from mesh.context import MeshContext
from mesh.tables.catalog import declare_catalog_tables
from mesh.tables.cursors import declare_cursor_table

__all__ = ["register_tables"]


def register_tables(context: MeshContext) -> None:
    """Declare every table of DictaMesh on ``context.app``."""
    context.cursors = declare_cursor_table(context)
    context.catalog = declare_catalog_tables(context, reverse_relations(context.domain))
    if context.settings.sagas:
        from mesh.sagas.service import Sagas
        from mesh.sagas.store import declare_saga_table

        context.sagas = Sagas(context, declare_saga_table(context))
