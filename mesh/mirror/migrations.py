"""The mirror's schema: versioned migrations, then the tables the domain config asks for.

Two kinds of change, applied at every connect inside one transaction under an advisory
lock (workers starting together take turns; DDL in Postgres is transactional):

1. **Migrations** change the mirror's own layout (metadata columns, indexes). They are
   ordered steps in :data:`MIGRATIONS`, each applied once and recorded in
   ``dictamesh_migrations``. A future metadata column is a new step that alters every
   existing entity table, and also goes into :data:`~mesh.mirror.tables.METADATA_COLUMNS`
   so tables created later have it.
2. **Config sync** follows the domain config: a table for every entity type that has
   none, with row-level security (:mod:`mesh.mirror.security`, checked and repaired at
   every connect), and ``ADD COLUMN IF NOT EXISTS`` for every field added since. Nothing is ever
   dropped or retyped automatically: a field whose type changed in the config is reported
   in the log and left for the operator, since altering a type can fail or lose data. A
   field removed from the config keeps its column (new rows leave it NULL); only its
   "required" check goes, since it would refuse every new row.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mesh.mirror.security import secure_table
from mesh.mirror.tables import REQUIRED_SUFFIX, URN_TENANT_CHECK, MirrorTable, quote_ident

log = logging.getLogger(__name__)

Cursor = Any  # an aiopg cursor (untyped library)

MIGRATIONS_TABLE = "dictamesh_migrations"
_LOCK_ID = 0x6D6972726F72  # "mirror": serialises schema changes of concurrent workers


@dataclass(frozen=True)
class Migration:
    """One ordered, recorded change to the mirror's layout."""

    version: int
    description: str
    apply: Callable[[Cursor, Iterable[MirrorTable]], Awaitable[None]]


async def _create_entity_tables(cur: Cursor, tables: Iterable[MirrorTable]) -> None:
    for table in tables:
        await cur.execute(table.create_sql())


async def _tenant_first_keys(cur: Cursor, tables: Iterable[MirrorTable]) -> None:
    """Move each table's primary key from ``(<key>)`` to ``(tenant, <key>)`` and add the
    check that ``tenant`` is the URN's (tables made by migration 1 already have both).

    Rows written before tenants existed all have a ``tenant`` (NOT NULL since migration 1)
    and unique keys, so the new key holds for them. Postgres rebuilds the index under an
    exclusive lock of the table, inside the migrations' transaction: readers of a large
    mirror wait for it (or rebuild the mirror from Kafka instead, see the README).
    """
    for table in tables:
        name = quote_ident(table.name)
        await cur.execute(
            "SELECT c.conname, array_agg(a.attname::text ORDER BY k.n) FROM pg_constraint c"
            " CROSS JOIN unnest(c.conkey) WITH ORDINALITY AS k(attnum, n)"
            " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum"
            " WHERE c.conrelid = to_regclass(%s) AND c.contype = 'p' GROUP BY c.conname",
            (name,),
        )
        found = await cur.fetchone()
        if found is None:
            continue  # no such table yet: the config sync creates it with the new layout
        constraint, columns = found
        if list(columns) != list(table.primary_key):
            columns_sql = ", ".join(map(quote_ident, table.primary_key))
            await cur.execute(
                f"ALTER TABLE {name} DROP CONSTRAINT {quote_ident(constraint)},"
                f" ADD PRIMARY KEY ({columns_sql})"
            )
        check_name, check = URN_TENANT_CHECK
        if check_name not in await _constraints(cur, table.name):
            await cur.execute(
                f"ALTER TABLE {name} ADD CONSTRAINT {quote_ident(check_name)} {check}"
            )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1, "entity tables: typed fields, metadata columns, data jsonb", _create_entity_tables
    ),
    Migration(2, "tenant first: primary key (tenant, key), urn of the tenant", _tenant_first_keys),
)


async def migrate(cur: Cursor, tables: Iterable[MirrorTable]) -> list[str]:
    """Apply pending migrations and sync the tables with the config; return what changed.

    Runs in its own transaction on ``cur``'s connection (which must be idle).
    """
    tables = list(tables)
    changes: list[str] = []
    await cur.execute("BEGIN")
    try:
        await cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        await cur.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
            " version integer PRIMARY KEY,"
            " description text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await cur.execute(f"SELECT version FROM {MIGRATIONS_TABLE}")
        applied = {int(row[0]) for row in await cur.fetchall()}
        for migration in sorted(MIGRATIONS, key=lambda m: m.version):
            if migration.version in applied:
                continue
            await migration.apply(cur, tables)
            await cur.execute(
                f"INSERT INTO {MIGRATIONS_TABLE} (version, description) VALUES (%s, %s)",
                (migration.version, migration.description),
            )
            changes.append(f"migration {migration.version}: {migration.description}")
        for table in tables:
            changes += await _sync_table(cur, table)
        await cur.execute("COMMIT")
    except BaseException:
        await cur.execute("ROLLBACK")
        raise
    return changes


async def _columns(cur: Cursor, table: str) -> dict[str, str]:
    """Existing columns of ``table`` and their types, as Postgres spells them."""
    await cur.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
        (quote_ident(table),),
    )
    return {str(name): str(kind) for name, kind in await cur.fetchall()}


async def _constraints(cur: Cursor, table: str) -> set[str]:
    await cur.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(%s)",
        (quote_ident(table),),
    )
    return {str(row[0]) for row in await cur.fetchall()}


def _spelled(sql_type: str) -> str:
    """How ``format_type`` spells our type names (it expands the abbreviation)."""
    return "timestamp with time zone" if sql_type == "timestamptz" else sql_type


async def _sync_table(cur: Cursor, table: MirrorTable) -> list[str]:
    await cur.execute(table.create_sql())
    # In this transaction, before anyone can read the new table: no moment without RLS.
    changes = await secure_table(cur, table)
    existing = await _columns(cur, table.name)
    name = quote_ident(table.name)
    for column in table.fields:
        found = existing.get(column.name)
        if found is None:
            await cur.execute(
                f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS "
                f"{quote_ident(column.name)} {column.sql_type}"
            )
            changes.append(f"added column {table.name}.{column.name} {column.sql_type}")
        elif found != _spelled(column.sql_type):
            log.warning(
                "mirror column %s.%s is %s but the domain config says %s; "
                "it is left as it is (alter it yourself if the change is intended)",
                table.name, column.name, found, column.sql_type,
            )  # fmt: skip
    constraints = await _constraints(cur, table.name)
    checks = dict(table.checks())
    for check_name, check in checks.items():
        if check_name not in constraints:
            # NOT VALID: rows written before the field existed have no value for it.
            await cur.execute(
                f"ALTER TABLE {name} ADD CONSTRAINT {quote_ident(check_name)} {check} NOT VALID"
            )
            changes.append(f"{table.name}: added constraint {check_name}")
    for stale in sorted(c for c in constraints if c.endswith(REQUIRED_SUFFIX)):
        if stale not in checks:
            # The field left the config or became nullable: new rows no longer carry it,
            # so the check would refuse them. Dropping a check loses no data.
            await cur.execute(f"ALTER TABLE {name} DROP CONSTRAINT {quote_ident(stale)}")
            changes.append(f"{table.name}: dropped constraint {stale}")
    return changes
