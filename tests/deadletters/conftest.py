"""Fixtures of the dead-letter command tests: the mirror's scenario (own topics, app id and
database schema) on the session's broker, registry and Postgres."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from mesh_tooling.dev.postgres import ensure_database
from psycopg2 import sql

from tests.mirror.support import Scenario


@pytest.fixture(scope="module")
def mirror_database(postgres_url: str) -> Iterator[str]:
    """URL of a database of this test module's own, dropped afterwards."""
    name = f"dictamesh_deadletters_{uuid.uuid4().hex[:8]}"
    url = ensure_database(postgres_url, name)
    yield url
    conn = psycopg2.connect(postgres_url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    finally:
        conn.close()


@pytest.fixture
def scenario(broker: str, registry_url: str, mirror_database: str, tmp_path: Path) -> Scenario:
    """This test's domain (own topics), app id and database schema."""
    return Scenario(broker, registry_url, mirror_database, tmp_path)
