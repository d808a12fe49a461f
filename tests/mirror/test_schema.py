"""The mirror's schema: tables and typed columns from the config, recorded migrations, and
the service registered on a worker only when a database is configured."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from mesh.agents.mirror import MirrorService
from mesh.app import create_app
from mesh.domain import parse_domain
from mesh.errors import ConfigError
from mesh.mirror import MIGRATIONS, MirrorWriter, mirror_tables
from mesh.settings import Settings
from tests.mirror.support import Scenario, domain_data, schemas_dir_for

EVERY_TYPE = {
    "code": {"type": "string"},
    "count": {"type": "integer"},
    "big": {"type": "long", "nullable": True},
    "ratio": {"type": "float"},
    "active": {"type": "boolean"},
    "amount": {"type": "decimal", "precision": 10, "scale": 4},
    "seen_at": {"type": "timestamp", "nullable": True},
}


def _with_user_entity() -> dict[str, Any]:
    data = domain_data()
    # `user` is a reserved word in SQL: the table name must be quoted everywhere.
    data["entities"]["user"] = {
        "graphql_name": "User",
        "sources": ["directus"],
        "collection": "users",
        "key": "code",
        "fields": EVERY_TYPE,
    }
    return data


def _query(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


async def test_tables_columns_and_migrations_follow_the_config(scenario: Scenario) -> None:
    domain = parse_domain(_with_user_entity())
    writer = MirrorWriter(scenario.dsn, mirror_tables(domain))
    await writer.connect()
    await writer.close()

    columns = dict(
        _query(
            scenario.dsn,
            "SELECT attname, format_type(atttypid, atttypmod) || CASE WHEN attnotnull"
            " THEN ' not null' ELSE '' END FROM pg_attribute WHERE attrelid = to_regclass(%s)"
            " AND attnum > 0 AND NOT attisdropped",
            '"user"',
        )
    )
    assert columns == {
        "code": "text not null",
        "count": "integer",
        "big": "bigint",
        "ratio": "double precision",
        "active": "boolean",
        "amount": "numeric(10,4)",
        "seen_at": "timestamp with time zone",
        "urn": "text not null",
        "tenant": "text not null",
        "source_system": "text not null",
        "source_instance": "text not null",
        "source_collection": "text not null",
        "version": "bigint not null",
        "schema_subject": "text",
        "schema_id": "integer not null",
        "schema_version": "integer",
        "first_seen": "timestamp with time zone not null",
        "last_changed": "timestamp with time zone not null",
        "deleted": "boolean not null",
        "event_id": "text not null",
        "data": "jsonb",
    }
    constraints = dict(
        _query(
            scenario.dsn,
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = to_regclass(%s)",
            '"user"',
        )
    )
    assert constraints["user_pkey"] == "PRIMARY KEY (tenant, code)"
    assert constraints["user_urn_key"] == "UNIQUE (urn)"
    assert constraints["urn_of_tenant"] == "CHECK ((split_part(urn, ':'::text, 3) = tenant))"
    # Non-nullable fields are required in live rows only: a tombstone has no values.
    assert constraints["count_required"] == "CHECK ((deleted OR (count IS NOT NULL)))"
    assert "big_required" not in constraints
    tables = {
        row[0]
        for row in _query(
            scenario.dsn, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
    }
    assert tables == {
        "customer",
        "product",
        "invoice",
        "invoice_item",
        "reservation",
        "user",
        "dictamesh_migrations",
    }
    recorded = _query(scenario.dsn, "SELECT version, description FROM dictamesh_migrations")
    assert recorded == [(m.version, m.description) for m in MIGRATIONS]

    again = MirrorWriter(scenario.dsn, mirror_tables(domain))
    await again.connect()  # a second start changes nothing
    await again.close()
    assert _query(scenario.dsn, "SELECT count(*) FROM dictamesh_migrations") == [(len(MIGRATIONS),)]


def test_a_field_named_like_a_metadata_column_stops_the_worker_before_it_starts(
    tmp_path: Path,
) -> None:
    data = domain_data()
    data["entities"]["product"]["fields"]["version"] = {"type": "integer"}
    domain = parse_domain(data)
    match = r"key 'entities.product.fields.version'.*metadata column"
    with pytest.raises(ConfigError, match=match):
        mirror_tables(domain)
    settings = _settings(
        tmp_path,
        database_url="postgresql://nobody@127.0.0.1:1/none",
        schemas_dir=schemas_dir_for(domain, tmp_path / "schemas"),
    )
    with pytest.raises(ConfigError, match=match):
        create_app(settings, domain)
    gc.collect()  # see the next test


def _settings(tmp_path: Path, **values: Any) -> Settings:
    return Settings(state_dir=tmp_path, **values)


def test_the_worker_runs_the_mirror_only_with_a_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="mesh.agents.mirror"):
        app = create_app(_settings(tmp_path)).app
    assert not any(issubclass(s, MirrorService) for s in app._extra_services)
    assert [r.getMessage() for r in caplog.records if r.name == "mesh.agents.mirror"] == [
        "postgres mirror off: MESH_DATABASE_URL is not set"
    ]
    app = create_app(_settings(tmp_path, database_url="postgresql://nobody@127.0.0.1:1/none")).app
    assert any(issubclass(s, MirrorService) for s in app._extra_services)
    del app
    # Collect the apps now: finalizers of Faust objects run by a later collection in the
    # middle of a compile trip CPython 3.11.7's "AST constructor recursion depth mismatch".
    gc.collect()
