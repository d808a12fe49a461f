"""Source cursors: where each source adapter resumes (e.g. the last Directus activity id).

Changelogged, so a restarted or moved adapter picks up exactly where the last one stopped.
Written by the adapter's runner outside any stream, so each key names its partition.
"""

from __future__ import annotations

import json
from typing import Any

from mesh.context import MeshContext
from mesh.runtime.keyed_table import KeyedTable, declare_keyed_table
from mesh.runtime.partitioning import key_partition

CURSOR_TABLE = "source_cursors"


def cursor_partition(source: str, partitions: int) -> int:
    """The changelog partition of ``source``'s cursor (Kafka's murmur2 partitioning).

    The worker that actively owns this partition is the one that polls the source.
    """
    return key_partition(source.encode(), partitions)


def declare_cursor_table(context: MeshContext) -> KeyedTable:
    """Declare the cursor table: key = source name (bytes), value = JSON cursor (bytes)."""
    return declare_keyed_table(
        context.app,
        CURSOR_TABLE,
        partitions=context.settings.topic_partitions,
        partition_of=lambda key, partitions: cursor_partition(key.decode(), partitions),
        help="Adapter cursors per source.",
    )


class CursorStore:
    """JSON cursors in the cursor table."""

    def __init__(self, table: KeyedTable) -> None:
        self.table = table
        self.changelog_topic = table.changelog_topic

    def get(self, source: str) -> dict[str, Any] | None:
        """The stored cursor of ``source``, if any."""
        raw = self.table.get(source.encode())
        return None if raw is None else dict(json.loads(raw))

    def set(self, source: str, cursor: dict[str, Any]) -> None:
        """Store ``cursor`` for ``source`` (sent to the changelog asynchronously)."""
        self.table.set(source.encode(), json.dumps(cursor, sort_keys=True).encode())
