"""Writing batches of rows to Postgres (aiopg): one transaction per batch, bad rows isolated.

The connection is opened lazily and re-opened after any failure; every (re)connect runs
:func:`~mesh.mirror.migrations.migrate`, so the schema is in place before the first write
and repaired after someone dropped a table. Failures of Postgres itself become
:class:`MirrorDatabaseError` (retriable) and nothing of the batch is committed; a row
that Postgres rejects (a value out of range, a NUL character) is isolated and returned,
and the rest of the batch is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiopg
import psycopg2

from mesh.mirror.errors import MirrorDatabaseError
from mesh.mirror.migrations import migrate
from mesh.mirror.rows import MirrorRow
from mesh.mirror.tables import MirrorTable
from mesh.mirror.upsert import UpsertStatement
from mesh.settings import redact_url

__all__ = ["MirrorWriter", "Rejected"]

log = logging.getLogger(__name__)

ROW_ERRORS: tuple[type[Exception], ...] = (psycopg2.DataError, psycopg2.IntegrityError, ValueError)
"""Errors caused by the data of a row (22xxx, 23xxx; ValueError: psycopg2 refuses a string
with a NUL character before sending it): the row is rejected, the batch goes on."""

_DATABASE_ERRORS = (psycopg2.Error, OSError, asyncio.TimeoutError)


@dataclass(frozen=True)
class Rejected:
    """A row Postgres refused, and why."""

    row: MirrorRow
    error: Exception


class MirrorWriter:
    """Upserts rows into the mirror tables of one Postgres database."""

    def __init__(
        self,
        dsn: str,
        tables: Mapping[str, MirrorTable],
        *,
        timeout_s: float = 60.0,
        connect_timeout_s: int = 5,
    ) -> None:
        """``dsn``: a libpq URL or key/value string; its database is used as is."""
        self.dsn = dsn
        self.tables = dict(tables)
        self.statements = {name: UpsertStatement(table) for name, table in tables.items()}
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._conn: Any = None

    async def connect(self) -> None:
        """Open the connection and migrate the schema, unless already connected."""
        await self._connection()

    async def _connection(self) -> Any:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = await aiopg.connect(
                self.dsn,
                timeout=self.timeout_s,
                enable_hstore=False,
                enable_uuid=False,
                connect_timeout=self.connect_timeout_s,
            )
        except _DATABASE_ERRORS as exc:
            raise self._unavailable("cannot connect to", exc) from exc
        try:
            async with conn.cursor() as cur:
                # jsonb_build_object renders timestamptz in the session time zone.
                await cur.execute("SET TIME ZONE 'UTC'")
                for change in await migrate(cur, self.tables.values()):
                    log.info("postgres mirror: %s", change)
        except _DATABASE_ERRORS as exc:
            conn.close()
            raise self._unavailable("cannot prepare the mirror schema in", exc) from exc
        self._conn = conn
        return conn

    async def close(self) -> None:
        """Close the connection (the next write opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    async def write(self, rows: Sequence[MirrorRow]) -> list[Rejected]:
        """Upsert ``rows`` in one transaction; return the rows Postgres rejected.

        Raises :class:`MirrorDatabaseError` when the batch could not be committed; then
        nothing of it is, and it can be written again as a whole.
        """
        conn = await self._connection()
        by_table: dict[str, list[MirrorRow]] = defaultdict(list)
        for row in rows:
            by_table[row.entity_type].append(row)
        parts = [
            (self.statements[entity_type], wave)
            for entity_type, table_rows in by_table.items()
            for wave in _waves(table_rows)
        ]
        try:
            async with conn.cursor() as cur:
                try:
                    await self._at_once(cur, parts)
                except ROW_ERRORS:
                    await cur.execute("ROLLBACK")
                else:
                    return []
                return await self._isolating(cur, parts)
        except _DATABASE_ERRORS as exc:
            await self.close()
            raise self._unavailable("cannot write to", exc) from exc

    async def _at_once(
        self, cur: Any, parts: list[tuple[UpsertStatement, list[MirrorRow]]]
    ) -> None:
        """The whole transaction in one round trip (the usual case: no row is refused).

        Why one: the mirror decodes the next batch while Postgres writes this one, and a
        statement sent in several round trips would wait for the decoding between them.
        """
        sql = ";\n".join(["BEGIN", *(statement.sql for statement, _ in parts), "COMMIT"])
        params = [p for statement, rows in parts for p in statement.params(rows)]
        await cur.execute(sql, params)

    async def _isolating(
        self, cur: Any, parts: list[tuple[UpsertStatement, list[MirrorRow]]]
    ) -> list[Rejected]:
        """The transaction again, a savepoint per statement, row by row where one fails."""
        rejected: list[Rejected] = []
        await cur.execute("BEGIN")
        try:
            for statement, rows in parts:
                await cur.execute("SAVEPOINT batch")
                try:
                    await cur.execute(statement.sql, statement.params(rows))
                except ROW_ERRORS:
                    await cur.execute("ROLLBACK TO SAVEPOINT batch")
                    rejected += await self._row_by_row(cur, statement, rows)
                else:
                    await cur.execute("RELEASE SAVEPOINT batch")
            await cur.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(*_DATABASE_ERRORS):
                await cur.execute("ROLLBACK")
            raise
        return rejected

    async def _row_by_row(
        self, cur: Any, statement: UpsertStatement, rows: list[MirrorRow]
    ) -> list[Rejected]:
        """Write ``rows`` one at a time (each under a savepoint) to find the bad ones."""
        rejected: list[Rejected] = []
        for row in rows:
            await cur.execute("SAVEPOINT one_row")
            try:
                await cur.execute(statement.sql, statement.params([row]))
            except ROW_ERRORS as exc:
                await cur.execute("ROLLBACK TO SAVEPOINT one_row")
                rejected.append(Rejected(row, exc))
            await cur.execute("RELEASE SAVEPOINT one_row")
        return rejected

    def _unavailable(self, what: str, exc: BaseException) -> MirrorDatabaseError:
        detail = str(exc).strip() or type(exc).__name__
        return MirrorDatabaseError(
            f"{what} Postgres at {redact_url(self.dsn)}: {type(exc).__name__}: {detail}"
        )


def _waves(rows: list[MirrorRow]) -> list[list[MirrorRow]]:
    """``rows`` split so that no list holds a key twice, each key's rows in their order.

    Why: ``INSERT … ON CONFLICT DO UPDATE`` refuses to touch one row twice in a statement.
    A key is the table's primary key, ``(tenant, key)``.
    """
    waves: list[list[MirrorRow]] = []
    seen: dict[tuple[str, Any], int] = {}
    for row in rows:
        slot = (row.tenant, row.key)
        n = seen.get(slot, 0)
        seen[slot] = n + 1
        if n == len(waves):
            waves.append([])
        waves[n].append(row)
    return waves
