"""Migration 2 on a mirror made before tenants: the primary key moves from the key field to
(tenant, key field), the rows stay, row-level security comes on, and the same id of
another tenant then becomes a row of its own."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import psycopg2

from mesh.mirror import MIGRATIONS, MirrorWriter, mirror_tables
from mesh.mirror.rows import Origin, SchemaInfo, event_row
from mesh.mirror.tables import URN_TENANT_CHECK, MirrorTable
from tests.mirror.events import event
from tests.mirror.support import Scenario, read_rows

V1_MIGRATIONS = (
    "CREATE TABLE dictamesh_migrations (version integer PRIMARY KEY, description text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now());"
    " INSERT INTO dictamesh_migrations (version, description)"
    " VALUES (1, 'entity tables: typed fields, metadata columns, data jsonb')"
)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def v1_layout(table: MirrorTable) -> str:
    """The table as migration 1 made it before tenants: its key field alone is the primary
    key, and no check ties the tenant to the URN."""
    ddl = table.create_sql()
    before = ddl.replace(
        f'PRIMARY KEY ("tenant", "{table.key}")', f'PRIMARY KEY ("{table.key}")'
    ).replace(f',\n  CONSTRAINT "{URN_TENANT_CHECK[0]}" {URN_TENANT_CHECK[1]}', "")
    assert f'PRIMARY KEY ("{table.key}")' in before
    assert URN_TENANT_CHECK[0] not in before
    return before


def _execute(dsn: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(statement, args)
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def _old_row(entity_id: int, name: str, version: int) -> tuple[Any, ...]:
    return (
        entity_id, name, f"c{entity_id}@example.com", "active",
        f"urn:dictamesh:default:customer:{entity_id}", "default", "directus", "directus",
        "customers", version, "customers.directus.entity_changed-value", 1, 1, T0, T0, False,
        f"event-{entity_id}",
    )  # fmt: skip


async def test_tables_of_the_old_layout_move_to_tenant_first_keys_with_their_rows(
    scenario: Scenario,
) -> None:
    domain = scenario.domain
    default, beta = domain.tenants
    assert default == "default"  # the tenant the rows of the old layout carry
    tables = mirror_tables(domain)
    _execute(scenario.dsn, V1_MIGRATIONS)
    for table in tables.values():
        _execute(scenario.dsn, v1_layout(table))
    for entity_id, name, version in [(1, "Ada", 3), (2, "Grace", 4)]:
        _execute(
            scenario.dsn,
            "INSERT INTO customer (id, name, email, status, urn, tenant, source_system,"
            " source_instance, source_collection, version, schema_subject, schema_id,"
            " schema_version, first_seen, last_changed, deleted, event_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            *_old_row(entity_id, name, version),
        )
    assert _execute(
        scenario.dsn, "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = %s",
        "customer_pkey",
    ) == [("PRIMARY KEY (id)",)]  # fmt: skip

    writer = MirrorWriter(scenario.dsn, tables)
    await writer.connect()  # applies migration 2
    try:
        for table in tables.values():
            constraints = dict(
                _execute(
                    scenario.dsn,
                    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
                    " WHERE conrelid = to_regclass(%s) AND conname IN (%s, %s)",
                    f'"{table.name}"', f"{table.name}_pkey", URN_TENANT_CHECK[0],
                )
            )  # fmt: skip
            assert constraints == {
                f"{table.name}_pkey": f"PRIMARY KEY (tenant, {table.key})",
                URN_TENANT_CHECK[0]: "CHECK ((split_part(urn, ':'::text, 3) = tenant))",
            }
            assert _execute(
                scenario.dsn,
                "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = %s::regclass",
                f'"{table.name}"',
            ) == [(True, True)]
        recorded = _execute(scenario.dsn, "SELECT version FROM dictamesh_migrations ORDER BY 1")
        assert recorded == [(m.version,) for m in MIGRATIONS] == [(1,), (2,)]
        rows = read_rows(scenario.dsn, "customer", by_tenant=True)
        assert {key: row["name"] for key, row in rows.items()} == {
            (default, 1): "Ada",
            (default, 2): "Grace",
        }

        # beta's customer 1 is another row; default's customer 1 is updated in place.
        schema = SchemaInfo(1, "customers-value", 1)
        table = tables["customer"]
        rows_in = [
            event_row(
                domain,
                table,
                ev,
                schema,
                Origin("t", 0, n, scenario.key("customer", 1, ev["tenant"]), None),
            )
            for n, ev in enumerate(
                [
                    event(domain, "customer", 1, 10, tenant=beta, name="Beta's one"),
                    event(domain, "customer", 1, 11, name="Ada Lovelace"),
                ]
            )
        ]
        assert await writer.write(rows_in) == []
    finally:
        await writer.close()
    rows = read_rows(scenario.dsn, "customer", by_tenant=True)
    assert {key: (row["name"], row["urn"]) for key, row in rows.items()} == {
        (default, 1): ("Ada Lovelace", f"urn:dictamesh:{default}:customer:1"),
        (default, 2): ("Grace", f"urn:dictamesh:{default}:customer:2"),
        (beta, 1): ("Beta's one", f"urn:dictamesh:{beta}:customer:1"),
    }
    assert rows[(default, 1)]["first_seen"] == T0  # kept from the old row
