"""How fast the mirror writes, against the rate at which the same consumer reads.

:func:`bench_mirror` produces ``events`` change events of one entity type to a topic of its
own, then consumes them twice with the mirror's consumer, each run in a fresh group: once
without writing (decode, collapse, commit: the baseline) and once writing to Postgres,
into a schema of its own that is dropped afterwards. Group joins and the schema migration
happen before the clock starts. Nothing of an existing mirror is touched.

The mirror writes as an ordinary role that owns its tables, so row-level security applies
to it (superusers skip it): when ``MESH_DATABASE_URL`` connects as a superuser, the bench
writes as a NOLOGIN role of its own (``SET ROLE`` through the connection's options) that
owns the bench schema, and drops it afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import psycopg2
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from mesh.codec import RegistryClient, build_codecs
from mesh.domain import DomainConfig, FieldType
from mesh.mirror.build import build_mirror
from mesh.mirror.consumer import MirrorConsumer
from mesh.schemas import load_event_schemas
from mesh.settings import Settings
from mesh.sources.events import ChangeEvent, Op

__all__ = ["MirrorBench", "bench_mirror"]


@dataclass(frozen=True)
class MirrorBench:
    """The figures of one run."""

    events: int
    entity_type: str
    writer: str
    """Who wrote, and whether row-level security applied."""
    produce_per_s: float
    consume_per_s: float
    write_per_s: float

    @property
    def ratio(self) -> float:
        """Write rate over consume-only rate."""
        return self.write_per_s / self.consume_per_s

    def lines(self) -> list[str]:
        """The figures, one per line, for a terminal or the README."""
        return [
            f"events: {self.events:,} of type {self.entity_type}",
            f"produce (aiokafka, acks=all): {self.produce_per_s:,.0f} events/s",
            f"mirror consume only (decode, collapse, commit): {self.consume_per_s:,.0f} events/s",
            f"mirror consume + Postgres upsert: {self.write_per_s:,.0f} rows/s",
            f"written as: {self.writer}",
            f"ratio: {self.ratio:.2f}",
        ]


async def bench_mirror(
    settings: Settings,
    domain: DomainConfig,
    *,
    events: int = 50_000,
    entity_type: str = "product",
) -> MirrorBench:
    """Measure the mirror on ``settings``' broker, registry and Postgres (must be set)."""
    if settings.database_url is None:
        raise ValueError("the mirror bench needs MESH_DATABASE_URL")
    token = uuid.uuid4().hex[:8]
    entity = domain.entities[entity_type]
    bench_domain = domain.model_copy(
        update={
            "entities": {
                entity_type: entity.model_copy(
                    update={"collection": f"{entity.collection}_bench_{token}"}
                )
            }
        }
    )
    topic = bench_domain.topic(entity_type)
    servers = settings.bootstrap_servers
    url = settings.database_url.get_secret_value()
    schema = f"dictamesh_bench_{token}"
    await _create_topic(servers, topic, settings.topic_partitions)
    superuser = await asyncio.to_thread(
        _sql, url, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    )
    role = f"dictamesh_bench_{token}" if superuser else None
    options = f"-csearch_path={schema}"
    if role is None:
        await asyncio.to_thread(_sql, url, f"CREATE SCHEMA {schema}")
        writer = "the URL's role (no superuser: row-level security applies)"
    else:
        await asyncio.to_thread(_sql, url, f"CREATE ROLE {role} NOLOGIN")
        await asyncio.to_thread(_sql, url, f"CREATE SCHEMA {schema} AUTHORIZATION {role}")
        options += f" -crole={role}"
        writer = f"{role}, owning the bench schema (row-level security applies)"
    try:
        produce_s = await _produce(settings, bench_domain, entity_type, events)
        consume_rate = await _drain(
            build_mirror(
                settings,
                bench_domain,
                CollectorRegistry(),
                write=False,
                group_id=f"bench-read-{token}",
            ),
            events,
        )
        sep = "&" if "?" in url else "?"
        writing = settings.model_copy(
            update={"database_url": SecretStr(f"{url}{sep}options={quote(options)}")}
        )
        mirror = build_mirror(
            writing, bench_domain, CollectorRegistry(), group_id=f"bench-write-{token}"
        )
        assert mirror.writer is not None
        await mirror.writer.connect()  # migrations outside the measurement
        write_rate = await _drain(mirror, events)
        found = await asyncio.to_thread(_sql, url, f'SELECT count(*) FROM {schema}."{entity_type}"')
        if found != events:
            raise RuntimeError(f"the mirror wrote {found} rows of {events}")
    finally:
        await asyncio.to_thread(_sql, url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        if role is not None:
            await asyncio.to_thread(_sql, url, f"DROP ROLE IF EXISTS {role}")
        with contextlib.suppress(Exception):
            await _delete_topic(servers, topic)
    return MirrorBench(events, entity_type, writer, events / produce_s, consume_rate, write_rate)


async def _drain(mirror: MirrorConsumer, events: int) -> float:
    """Records per second ``mirror.run`` (the worker's loop) applies, up to ``events``."""
    await mirror.start()
    try:
        while mirror.consumer is not None and not mirror.consumer.assignment():
            await mirror.step(timeout_ms=100)  # joining the group: not timed
        before = mirror.applied  # what the join's last step may have applied
        started = time.perf_counter()
        await mirror.run(lambda: mirror.applied >= events)
        # Up to the last commit, not the idle fetch that ends the loop.
        return (mirror.applied - before) / (mirror.applied_at - started)
    finally:
        await mirror.stop()


async def _produce(
    settings: Settings, domain: DomainConfig, entity_type: str, events: int
) -> float:
    """Seconds to produce ``events`` SNAPSHOT events, ids and versions 1…events."""
    schemas = load_event_schemas(domain, settings.schemas_dir)
    codec = build_codecs(domain, schemas, RegistryClient(settings.schema_registry_url))[entity_type]
    source = domain.entity_sources(entity_type)[0]
    records = []
    for n in range(1, events + 1):
        after = _sample(domain, entity_type, n)
        change = ChangeEvent(
            entity_type,
            str(n),
            Op.SNAPSHOT,
            domain.entities[entity_type].collection,
            n,
            None,
            after,
        )
        records.append((change.key(source), codec.dumps(change.envelope(source))))
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=5
    )
    await producer.start()
    try:
        started = time.perf_counter()
        topic = domain.topic(entity_type)
        pending = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*pending)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def _sample(domain: DomainConfig, entity_type: str, n: int) -> dict[str, Any]:
    """An ``after`` record of ``entity_type`` whose values vary with ``n``."""
    entity = domain.entities[entity_type]
    after: dict[str, Any] = {}
    for name, spec in entity.fields.items():
        value: Any
        match spec.type:
            case FieldType.STRING:
                value = f"{name}-{n:08d}"
            case FieldType.INTEGER | FieldType.LONG:
                value = n if name == entity.key else n % 1000
            case FieldType.FLOAT:
                value = n / 7
            case FieldType.BOOLEAN:
                value = n % 2 == 0
            case FieldType.DECIMAL:
                assert spec.scale is not None
                value = Decimal(n % 100_000).scaleb(-spec.scale)
            case FieldType.TIMESTAMP:
                value = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=n)
        after[name] = value
    return after


def _sql(url: str, statement: str) -> Any:
    """Run one statement; return the first column of its first row, if it has rows."""
    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(statement)
            row = cur.fetchone() if cur.description else None
            return row[0] if row else None
    finally:
        conn.close()


async def _create_topic(servers: list[str], topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def _delete_topic(servers: list[str], topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()
