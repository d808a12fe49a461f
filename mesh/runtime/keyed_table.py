"""Small changelogged tables written outside any stream, whose keys name their partition."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faust


class _KeyPartitionedTable(faust.Table[bytes, bytes]):
    # Faust derives a key's partition from the event being processed; these tables are
    # written outside any stream, so the partition comes from the key.
    partition_of: Callable[[bytes, int], int]

    def partition_for_key(self, key: Any) -> int:
        return self.partition_of(bytes(key), self.partitions or 1)


class KeyedTable:
    """A changelogged table of a few small records kept in memory (rebuilt from its
    changelog on recovery), each key's partition chosen by ``partition_of``."""

    def __init__(self, table: _KeyPartitionedTable) -> None:
        self._table = table
        self.changelog_topic: str = table.changelog_topic.get_topic_name()

    def get(self, key: bytes) -> bytes | None:
        value = self._table.get(key)
        return None if value is None else bytes(value)

    def set(self, key: bytes, value: bytes) -> None:
        """Store ``value`` (sent to the changelog asynchronously)."""
        self._table[key] = value

    async def put(self, key: bytes, value: bytes) -> None:
        """Store ``value`` once the changelog acknowledged it: after this returns, a crash
        of this worker cannot lose it (the next owner recovers it)."""
        table = self._table
        sent = await table.changelog_topic.send(
            key=key,
            value=value,
            partition=table.partition_for_key(key),
            key_serializer="raw",
            value_serializer="raw",
        )
        await sent
        table.data[key] = value  # the changelog has it already: not sent again

    def partition(self, key: bytes) -> int:
        """The changelog partition of ``key``."""
        return self._table.partition_for_key(key)

    def items(self) -> list[tuple[bytes, bytes]]:
        """Every record this worker holds (active and standby partitions)."""
        return [(bytes(k), bytes(v)) for k, v in self._table.data.items()]


def declare_keyed_table(
    app: faust.App,
    name: str,
    *,
    partitions: int,
    partition_of: Callable[[bytes, int], int],
    help: str,
) -> KeyedTable:
    """Declare a :class:`KeyedTable` on ``app``."""

    class Table(_KeyPartitionedTable):
        pass

    Table.partition_of = staticmethod(partition_of)
    table = Table(
        app,
        name=name,
        beacon=app.tables.beacon,
        default=None,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        # The RocksDB store only accepts writes inside stream iteration; these tables hold
        # a few small records and are rebuilt from their changelogs.
        # ("memory://" alone parses to an empty, falsy URL: it needs a host part.)
        store=f"memory://{name}",
        help=help,
    )
    app.tables.add(table)
    return KeyedTable(table)
