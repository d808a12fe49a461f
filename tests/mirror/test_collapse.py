"""Collapsing a batch to the newest version per key changes nothing about the result.

First against a model of the upsert, then against Postgres itself: the same events written
one at a time and in collapsed batches leave identical tables. Both draw their ids from
two tenants, so the same id of two tenants is two keys (the table's key is (tenant, id)).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.domain import DomainConfig
from mesh.mirror import MirrorWriter, collapse, mirror_tables
from mesh.mirror.rows import MirrorRow, Origin, SchemaInfo, event_row
from mesh.mirror.tables import METADATA_COLUMNS
from tests.mirror.events import event
from tests.mirror.support import domain_data, own_topics, read_rows, with_search_path

FIRST_SEEN = [c.name for c in METADATA_COLUMNS].index("first_seen")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
TENANTS = ("default", "beta")

Slot = tuple[str, Any]
"""A key of the model's table: (tenant, key)."""


@dataclass(frozen=True)
class Stored:
    """What the table holds for a key, per the upsert's documented semantics."""

    version: int
    typed: tuple[Any, ...]
    meta: tuple[Any, ...]
    has_data: bool


def upsert(table: dict[Slot, Stored], row: MirrorRow) -> None:
    """The model: insert, or replace a strictly older version; a row without state keeps
    the stored values; ``first_seen`` stays from the insert."""
    slot = (row.tenant, row.key)
    current = table.get(slot)
    if current is None:
        table[slot] = Stored(row.version, row.typed, row.meta, row.has_state)
    elif current.version < row.version:
        meta = list(row.meta)
        meta[FIRST_SEEN] = current.meta[FIRST_SEEN]
        table[slot] = Stored(
            row.version,
            row.typed if row.has_state else current.typed,
            tuple(meta),
            row.has_state or current.has_data,
        )


@st.composite
def model_rows(draw: st.DrawFn) -> MirrorRow:
    tenant = draw(st.sampled_from(TENANTS))
    key = draw(st.integers(0, 4))  # the same ids in both tenants
    version = draw(st.integers(0, 8))
    has_state = draw(st.booleans())
    typed = (
        (key, f"{tenant} state of v{version}", draw(st.integers(0, 3)))
        if has_state
        else (key, None, None)
    )
    meta = tuple(
        T0 + timedelta(seconds=draw(st.integers(0, 100))) if i == FIRST_SEEN else (version, i)
        for i in range(len(METADATA_COLUMNS))
    )
    return MirrorRow(
        "thing", tenant, key, version, typed, meta, has_state, Origin("t", 0, 0, None, None)
    )


@settings(max_examples=400)
@given(existing=st.lists(model_rows(), max_size=6), batch=st.lists(model_rows(), max_size=25))
def test_writing_the_collapsed_batch_equals_writing_every_row(
    existing: list[MirrorRow], batch: list[MirrorRow]
) -> None:
    one_by_one: dict[Slot, Stored] = {}
    collapsed: dict[Slot, Stored] = {}
    for row in existing:
        upsert(one_by_one, row)
        upsert(collapsed, row)
    for row in batch:
        upsert(one_by_one, row)
    newest = collapse(batch)
    for row in newest:
        upsert(collapsed, row)
    assert collapsed == one_by_one
    # At most two rows per key: the one with values first, then the newest (a DELETE).
    keys = [(row.tenant, row.key) for row in newest]
    assert keys[-len(set(keys)) :] == list(dict.fromkeys((row.tenant, row.key) for row in batch))
    for key in set(keys):
        twice = [row for row in newest if (row.tenant, row.key) == key]
        assert len(twice) <= 2
        if len(twice) == 2:
            assert twice[0].has_state
            assert not twice[1].has_state
            assert twice[0].version < twice[1].version


# --- the same property against Postgres --------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def writers(
    mirror_database: str,
) -> AsyncIterator[tuple[DomainConfig, MirrorWriter, MirrorWriter]]:
    """Two writers on two empty schemas of the module's database."""
    domain = own_topics(domain_data(), "collapse")
    tables = mirror_tables(domain)
    dsns = []
    for _ in range(2):
        schema = f"t_{uuid.uuid4().hex[:8]}"
        with psycopg2.connect(mirror_database) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {schema}")
        conn.close()
        dsns.append(with_search_path(mirror_database, schema))
    one, batched = MirrorWriter(dsns[0], tables), MirrorWriter(dsns[1], tables)
    yield domain, one, batched
    await one.close()
    await batched.close()


@st.composite
def customer_events(draw: st.DrawFn, domain: DomainConfig) -> dict[str, Any]:
    tenant = draw(st.sampled_from(domain.tenants))
    entity_id = draw(st.integers(1, 4))  # the same ids in every tenant
    version = draw(st.integers(1, 12))
    op = draw(st.sampled_from(["CREATE", "UPDATE", "DELETE", "SNAPSHOT"]))
    ev = event(domain, "customer", entity_id, version, op=op, tenant=tenant)
    ev["source"]["timestamp"] = T0 + timedelta(seconds=draw(st.integers(0, 1000)))
    return ev


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
async def test_postgres_agrees_batched_or_one_at_a_time(
    writers: tuple[DomainConfig, MirrorWriter, MirrorWriter], data: st.DataObject
) -> None:
    domain, one, batched = writers
    table = mirror_tables(domain)["customer"]
    events = data.draw(st.lists(customer_events(domain), max_size=30))
    cut = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=3)))
    schema = SchemaInfo(1, "customers-value", 1)
    rows = [
        event_row(
            domain,
            table,
            ev,
            schema,
            Origin("t", 0, n, domain.urn(ev["tenant"], "customer", ev["entity_id"]).encode(), None),
        )
        for n, ev in enumerate(events)
    ]
    for writer in (one, batched):
        await writer.connect()  # creates the tables
        conn = psycopg2.connect(writer.dsn)
        with conn, conn.cursor() as cur:
            cur.execute('TRUNCATE "customer"')
        conn.close()
    for row in rows:
        assert await one.write([row]) == []
    for start, end in zip([0, *cut], [*cut, len(rows)], strict=True):
        assert await batched.write(collapse(rows[start:end])) == []
    assert read_rows(one.dsn, "customer", by_tenant=True) == read_rows(
        batched.dsn, "customer", by_tenant=True
    )
