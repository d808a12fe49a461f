"""Source cursors: where each source adapter resumes (e.g. the last Directus activity id).

Changelogged, so a restarted or moved adapter picks up exactly where the last one stopped.
"""

from __future__ import annotations

from mesh.context import MeshContext

CURSOR_TABLE = "source_cursors"


def declare_cursor_table(context: MeshContext) -> None:
    """Declare the cursor table: key ``<source>/<collection>`` (bytes), value: position."""
    context.tables[CURSOR_TABLE] = context.app.Table(
        CURSOR_TABLE,
        default=None,
        partitions=1,
        key_type=bytes,
        value_type=bytes,
        help="Adapter cursors per source and collection.",
        options=context.table_options(),
    )
