"""Source cursors: where each source adapter resumes (e.g. the last Directus activity id).

Changelogged, so a restarted or moved adapter picks up exactly where the last one stopped.
Written by the adapter's runner outside any stream: see :class:`CursorTable`.
"""

from __future__ import annotations

import json
from typing import Any

import faust

from mesh.context import MeshContext
from mesh.runtime.partitioning import key_partition

CURSOR_TABLE = "source_cursors"


def cursor_partition(source: str, partitions: int) -> int:
    """The changelog partition of ``source``'s cursor (Kafka's murmur2 partitioning).

    The worker that actively owns this partition is the one that polls the source.
    """
    return key_partition(source.encode(), partitions)


class CursorTable(faust.Table[bytes, bytes]):  # type: ignore[misc]
    """A table whose keys name their changelog partition themselves.

    Faust derives a key's partition from the event being processed; cursors are written
    by the source runner, outside any stream, so the partition comes from the key.
    """

    def partition_for_key(self, key: Any) -> int:
        return cursor_partition(bytes(key).decode(), self.partitions or 1)


def declare_cursor_table(context: MeshContext) -> None:
    """Declare the cursor table: key = source name (bytes), value = JSON cursor (bytes)."""
    app = context.app
    context.tables[CURSOR_TABLE] = app.tables.add(
        CursorTable(
            app,
            name=CURSOR_TABLE,
            beacon=app.tables.beacon,
            default=None,
            partitions=context.settings.topic_partitions,
            key_type=bytes,
            value_type=bytes,
            # The RocksDB store only accepts writes inside stream iteration; this table
            # holds one small record per source and is rebuilt from its changelog.
            # ("memory://" alone parses to an empty, falsy URL: it needs a host part.)
            store="memory://cursors",
            help="Adapter cursors per source.",
        )
    )


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
