"""Helpers of the mirror tests: a domain with its own topics, events, producing, reading rows."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2
import psycopg2.extras
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import RecordMetadata
from prometheus_client import CollectorRegistry

from mesh.codec import AvroEventCodec, RegistryClient, build_codecs
from mesh.domain import DomainConfig, expand_env, parse_domain
from mesh.mirror import MirrorConsumer, build_mirror
from mesh.retry import RetryPolicy
from mesh.schemas import load_event_schemas, write_after_schemas
from mesh.settings import Settings
from tests.support.workers import MeshWorker

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


def domain_data() -> dict[str, Any]:
    """The shipped domain config as data (to change before parsing), ``${VAR:-default}``
    expanded as :func:`~mesh.domain.load_domain` would."""
    path = PROJECT_ROOT / "config" / "domain.yaml"
    data = expand_env(yaml.safe_load(path.read_text()), source=str(path))
    assert isinstance(data, dict)
    data["sources"][0]["url"] = "http://127.0.0.1:1"
    return data


def own_topics(data: dict[str, Any], suffix: str) -> DomainConfig:
    """``data`` parsed with every collection suffixed, so its topics are this test's own."""
    for entity in data["entities"].values():
        entity["collection"] = f"{entity['collection']}_{suffix}"
    return parse_domain(data)


def schemas_dir_for(domain: DomainConfig, where: Path) -> Path:
    """A schemas directory matching ``domain`` (the shipped envelope, derived after records)."""
    where.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "schemas" / "envelope.avsc", where / "envelope.avsc")
    write_after_schemas(domain, where)
    return where


class Scenario:
    """One test's world: a domain with its own topics, app id, database schema and codecs."""

    def __init__(
        self,
        broker: str,
        registry_url: str,
        database_url: str,
        tmp: Path,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.suffix = uuid.uuid4().hex[:8]
        self.broker = broker
        self.registry_url = registry_url
        self.tmp = tmp
        self.app_id = f"mirror-test-{self.suffix}"
        self.domain = own_topics(data or domain_data(), self.suffix)
        self.database_url = database_url
        self.dsn = self.new_schema()
        self.codecs = self.codecs_for(self.domain)

    def domain_with(self, data: dict[str, Any]) -> DomainConfig:
        """Another config for the same topics (e.g. with a field added)."""
        return own_topics(data, self.suffix)

    def new_schema(self) -> str:
        """The URL of another, empty database schema (to compare two mirrors)."""
        schema = f"t_{uuid.uuid4().hex[:8]}"
        with psycopg2.connect(self.database_url) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {schema}")
        conn.close()
        return with_search_path(self.database_url, schema)

    def codecs_for(self, domain: DomainConfig) -> dict[str, AvroEventCodec]:
        schemas = load_event_schemas(domain, self.schemas_dir(domain))
        return build_codecs(domain, schemas, RegistryClient(self.registry_url))

    def schemas_dir(self, domain: DomainConfig) -> Path:
        return schemas_dir_for(domain, self.tmp / f"schemas-{uuid.uuid4().hex[:6]}")

    def settings(self, domain: DomainConfig | None = None, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "broker_url": f"kafka://{self.broker}",
            "schema_registry_url": self.registry_url,
            "database_url": self.dsn,
            "app_id": self.app_id,
            "schemas_dir": self.schemas_dir(domain or self.domain),
            "rebalance_timeout_s": 1.0,
        }
        values.update(overrides)
        return Settings(**values)

    def mirror(
        self,
        domain: DomainConfig | None = None,
        *,
        metrics: CollectorRegistry | None = None,
        group_id: str | None = None,
        **overrides: Any,
    ) -> MirrorConsumer:
        domain = domain or self.domain
        return build_mirror(
            self.settings(domain, **overrides),
            domain,
            metrics or CollectorRegistry(),
            group_id=group_id,
            retry=RetryPolicy(0.05, 0.3),
            lag_interval_s=0.1,
        )

    async def create_topics(self, partitions: int = 3) -> None:
        self.partitions = partitions
        admin = AIOKafkaAdminClient(bootstrap_servers=self.broker)
        await admin.start()
        try:
            topics = [topic for t in self.domain.entities for topic in self.domain.topics(t)]
            topics.append(f"{self.app_id}.dead_letters")
            await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
        finally:
            await admin.close()

    async def worker(self, where: Path) -> MeshWorker:
        """A ``mesh worker`` process (not started) mirroring this scenario's topics, with
        the sample domain under its own topic names; the topics are created first."""
        data = domain_data()
        own_topics(data, self.suffix)  # suffixes the collections in `data` as well
        config = where / "domain.yaml"
        config.write_text(yaml.safe_dump(data, sort_keys=False))  # field order matters
        await self.create_topics()
        return MeshWorker(
            "worker-0",
            app_id=self.app_id,
            state_dir=where / "state",
            log_dir=where,
            env={
                "MESH_BROKER_URL": f"kafka://{self.broker}",
                "MESH_SCHEMA_REGISTRY_URL": self.registry_url,
                "MESH_DATABASE_URL": self.dsn,
                "MESH_DOMAIN_CONFIG": str(config),
                "MESH_SCHEMAS_DIR": str(self.schemas_dir(self.domain)),
                "MESH_ROCKSDB_BLOCK_CACHE_MB": "8",
                "MESH_TOPIC_PARTITIONS": str(self.partitions),
                "MESH_REBALANCE_TIMEOUT_S": "2",
            },
        )

    def key(self, entity_type: str, entity_id: object, tenant: str | None = None) -> bytes:
        """The Kafka key of an entity: its URN (tenant: the domain's first by default)."""
        return self.domain.urn(
            tenant or self.domain.tenants[0], entity_type, str(entity_id)
        ).encode()

    async def produce(
        self,
        events: Iterable[dict[str, Any]],
        *,
        codecs: dict[str, AvroEventCodec] | None = None,
        one_by_one: bool = False,
    ) -> list[RecordMetadata]:
        """Encode ``events`` with our codec and send them keyed by their URN."""
        codecs = codecs or self.codecs
        messages = [
            (
                self.domain.topic(e["entity_type"], e["tenant"]),
                self.key(e["entity_type"], e["entity_id"], e["tenant"]),
                codecs[e["entity_type"]].dumps(e),
            )
            for e in events
        ]
        return await self.send_raw(messages, one_by_one=one_by_one)

    async def send_raw(
        self,
        messages: Iterable[tuple[str, bytes | None, bytes | None]],
        *,
        one_by_one: bool = False,
    ) -> list[RecordMetadata]:
        """Send ``(topic, key, value)`` messages in order; return where each landed.

        ``one_by_one`` sends each in a batch of its own: Tansu's end offsets are then exact
        (it reports the last batch's base offset + 1).
        """
        producer = AIOKafkaProducer(bootstrap_servers=self.broker, acks="all", linger_ms=5)
        await producer.start()
        try:
            if one_by_one:
                return [await producer.send_and_wait(t, v, key=k) for t, k, v in messages]
            pending = [await producer.send(t, v, key=k) for t, k, v in messages]
            return list(await asyncio.gather(*pending))
        finally:
            await producer.stop()

    async def dead_letters(self, count: int, timeout: float = 20.0) -> list[ConsumerRecord]:
        """The first ``count`` records of the app's dead-letter topic."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.broker, enable_auto_commit=False)
        await consumer.start()
        try:
            topic = f"{self.app_id}.dead_letters"
            consumer.assign([TopicPartition(topic, p) for p in range(self.partitions)])
            await consumer.seek_to_beginning()
            found: list[ConsumerRecord] = []
            deadline = time.monotonic() + timeout
            while len(found) < count and time.monotonic() < deadline:
                for part in (await consumer.getmany(timeout_ms=200)).values():
                    found.extend(part)
            return found
        finally:
            await consumer.stop()

    def rows(
        self, entity_type: str, dsn: str | None = None, *, by_tenant: bool = False
    ) -> dict[Any, dict[str, Any]]:
        return read_rows(dsn or self.dsn, entity_type, by_tenant=by_tenant)


def with_search_path(url: str, schema: str) -> str:
    """``url`` with the session's search_path set to ``schema`` (one schema per test)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


def read_rows(dsn: str, table: str, *, by_tenant: bool = False) -> dict[Any, dict[str, Any]]:
    """Every row of ``table`` by its key column ``id`` (``by_tenant``: by ``(tenant, id)``)."""
    conn = psycopg2.connect(dsn)
    # Decimals in jsonb read back exactly, not as floats.
    psycopg2.extras.register_default_jsonb(conn, loads=lambda s: json.loads(s, parse_float=Decimal))
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            cur.execute(f'SELECT * FROM "{table}"')
            rows = [dict(row) for row in cur.fetchall()]
    finally:
        conn.close()
    if by_tenant:
        return {(row["tenant"], row["id"]): row for row in rows}
    assert len({row["id"] for row in rows}) == len(rows), "ids of several tenants: by_tenant"
    return {row["id"]: row for row in rows}


async def catch_up(
    mirror: MirrorConsumer,
    *,
    until: Callable[[], bool] = lambda: True,
    timeout: float = 30.0,
) -> None:
    """Run ``mirror`` batch by batch until it has nothing left to read and ``until()``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = await mirror.step(timeout_ms=200)
        if count == 0 and mirror.consumer is not None and mirror.consumer.assignment():
            await mirror.update_lag()
            if total_lag(mirror) == 0 and until():
                return
    raise AssertionError(f"the mirror did not catch up within {timeout} s")


def total_lag(mirror: MirrorConsumer) -> float:
    return sum(sample.value for metric in mirror.metrics.lag.collect() for sample in metric.samples)


async def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float = 30.0,
    what: str = "",
    state: Callable[[], object] = lambda: "",
) -> None:
    """Poll ``check`` every 0.1 s until it holds; on timeout, say ``what`` and ``state()``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout} s: {what} {state()}")
        await asyncio.sleep(0.1)
