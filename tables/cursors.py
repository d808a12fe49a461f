"""Source cursors: where each source adapter resumes (e.g. the last Directus activity id).

Changelogged, so a restarted or moved adapter picks up exactly where the last one stopped.
Written by the adapter's runner outside any stream, hence the producer's partitioner
(``use_partitioner``) and the in-memory store, which accepts such writes; the table holds
one small record per source and is rebuilt from its changelog at start.
"""

from __future__ import annotations

import json
from typing import Any

from aiokafka.partitioner import murmur2

from mesh.context import MeshContext

CURSOR_TABLE = "source_cursors"


def declare_cursor_table(context: MeshContext) -> None:
    """Declare the cursor table: key = source name (bytes), value = JSON cursor (bytes)."""
    context.tables[CURSOR_TABLE] = context.app.Table(
        CURSOR_TABLE,
        default=None,
        partitions=context.settings.topic_partitions,
        key_type=bytes,
        value_type=bytes,
        store="memory://",
        use_partitioner=True,
        help="Adapter cursors per source.",
    )


def cursor_partition(source: str, partitions: int) -> int:
    """The changelog partition of ``source``'s cursor (Kafka's default partitioner).

    The worker that actively owns this partition is the one that polls the source.
    """
    return (murmur2(source.encode()) & 0x7FFFFFFF) % partitions


class CursorStore:
    """JSON cursors in the cursor table."""

    def __init__(self, context: MeshContext) -> None:
        self.table = context.tables[CURSOR_TABLE]

    @property
    def changelog_topic(self) -> str:
        """Name of the table's changelog topic."""
        return str(self.table.changelog_topic.get_topic_name())

    def get(self, source: str) -> dict[str, Any] | None:
        """The stored cursor of ``source``, if any."""
        raw = self.table.get(source.encode())
        return None if raw is None else dict(json.loads(raw))

    def set(self, source: str, cursor: dict[str, Any]) -> None:
        """Store ``cursor`` for ``source`` (sent to the changelog asynchronously)."""
        self.table[source.encode()] = json.dumps(cursor, sort_keys=True).encode()
