"""The saga table: every saga's state by id, changelogged, one partition per id.

Small records kept in memory and rebuilt from the changelog by whoever owns a partition
next. A state is written with :meth:`SagaStore.put`, which returns once the changelog
acknowledged it: the engine persists a transition before it acts on it.
"""

from __future__ import annotations

from collections.abc import Iterator

from mesh.context import MeshContext
from mesh.runtime.keyed_table import KeyedTable, declare_keyed_table
from mesh.sagas.ids import saga_partition
from mesh.sagas.state import SagaState

__all__ = ["SAGA_TABLE", "SagaStore", "declare_saga_table"]

SAGA_TABLE = "sagas"


def declare_saga_table(context: MeshContext) -> KeyedTable:
    """Declare the saga table: key = saga id (bytes), value = the state's JSON."""
    return declare_keyed_table(
        context.app,
        SAGA_TABLE,
        partitions=context.settings.topic_partitions,
        partition_of=lambda key, partitions: saga_partition(key.decode(), partitions),
        help="Saga states by saga id.",
    )


class SagaStore:
    """Saga states in the saga table."""

    def __init__(self, table: KeyedTable) -> None:
        self.table = table
        self.changelog_topic = table.changelog_topic

    def get(self, saga: str) -> SagaState | None:
        raw = self.table.get(saga.encode())
        return None if raw is None else SagaState.loads(raw)

    async def put(self, state: SagaState) -> None:
        """Persist ``state`` (returns once the changelog holds it)."""
        await self.table.put(state.id.encode(), state.dumps())

    def partition(self, saga: str) -> int:
        return self.table.partition(saga.encode())

    def states(self, partitions: frozenset[int]) -> Iterator[SagaState]:
        """The sagas of ``partitions`` this worker holds."""
        for key, raw in self.table.items():
            if self.table.partition(key) in partitions:
                yield SagaState.loads(raw)
