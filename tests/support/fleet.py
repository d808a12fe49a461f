"""A fleet of ``mesh worker`` processes with a broker and a registry of its own, and the
events it is fed (the catalog REST, GraphQL and cache tests).

Nothing is mocked: workers are ``python -m mesh worker`` subprocesses, change events are
encoded with our codec (Avro, Confluent wire format, registered in a real registry) and
produced with aiokafka keyed by URN bytes, as any publisher would.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import RecordMetadata
from mesh_tooling.dev.process import ManagedProcess, free_port

from mesh.codec import AvroEventCodec, RegistryClient, build_codecs
from mesh.deadletter import dead_letter_topic
from mesh.domain import DomainConfig
from mesh.schemas import load_event_schemas
from mesh.settings import Settings
from mesh.sources.events import ChangeEvent, Op
from tests.support.services import own_broker, start_registry
from tests.support.waiting import wait_until
from tests.support.workers import Answer, MeshWorker, start_workers, wait_stable

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
TIMEOUT = 30.0
"""Seconds an event may take to show in the API (normally well under one)."""


@dataclass
class Fleet:
    """The module's broker, registry, workers and an event writer."""

    domain: DomainConfig
    bootstrap: str
    registry_url: str
    dead_letter_topic: str
    producer: AIOKafkaProducer
    codecs: dict[str, AvroEventCodec]
    workers: list[MeshWorker]
    registry: ManagedProcess
    latest: dict[tuple[str, str], tuple[int, bool]] = field(default_factory=dict)
    """Per (type, id) of the first tenant: the newest version produced and whether it is a
    delete."""

    async def wait_stable(self, timeout: float = 90.0) -> None:
        """Wait until every worker is ready and actively owns partitions."""
        await wait_stable(self.workers, timeout=timeout)

    async def send(
        self,
        entity_type: str,
        entity_id: int,
        position: int,
        after: dict[str, Any] | None,
        op: Op = Op.UPDATE,
        tenant: str | None = None,
    ) -> RecordMetadata:
        """Produce one change event (``after=None`` deletes) keyed by the entity's URN, from
        ``tenant``'s source (default: the first tenant's)."""
        entity = self.domain.entities[entity_type]
        tenant = tenant or self.domain.tenants[0]
        source = next(s for s in self.domain.entity_sources(entity_type) if s.tenant == tenant)
        event = ChangeEvent(
            entity_type=entity_type,
            entity_id=str(entity_id),
            op=Op.DELETE if after is None else op,
            collection=entity.collection,
            position=position,
            source_timestamp=T0 + timedelta(seconds=position),
            after=None if after is None else {"id": entity_id, **after},
            changed_fields=tuple(after or ()),
        )
        value = self.codecs[entity_type].dumps(event.envelope(source))
        topic = self.domain.topic(entity_type, tenant)
        meta = await self.send_raw(topic, event.key(source), value)
        key = (entity_type, str(entity_id))
        if tenant != self.domain.tenants[0]:
            return meta  # latest is the first tenant's
        if key not in self.latest or self.latest[key][0] < position:
            self.latest[key] = (position, after is None)
        return meta

    async def send_raw(self, topic: str, key: bytes, value: bytes) -> RecordMetadata:
        """Produce ``value`` as is (e.g. a corrupt message) and wait for the ack."""
        return await (await self.producer.send(topic, value, key=key))

    def expected_counts(self) -> dict[str, dict[str, int]]:
        """Live and deleted entities per type, from everything produced so far."""
        counts = {t: {"live": 0, "deleted": 0} for t in self.domain.entities}
        for (entity_type, _), (_, deleted) in self.latest.items():
            counts[entity_type]["deleted" if deleted else "live"] += 1
        return counts


@contextlib.asynccontextmanager
async def open_fleet(
    domain: DomainConfig,
    root: Path,
    app_id: str,
    partitions: int,
    names: list[str],
    env: Mapping[str, str] | None = None,
    *,
    static_membership: bool = False,
    worker_env: Mapping[str, Mapping[str, str]] | None = None,
) -> AsyncIterator[Fleet]:
    """A broker and registry of its own, the entity topics, and ready workers ``names``
    (``env`` adds to or overrides their environment, ``worker_env[name]`` one worker's;
    ``static_membership``: each worker's name is its group instance id, as a StatefulSet's
    pod name is)."""
    logs = root / "logs"
    async with contextlib.AsyncExitStack() as cleanup:
        bootstrap = await own_broker(cleanup, logs)
        registry, registry_url = await start_registry(root / "registry.db", logs)
        cleanup.push_async_callback(registry.stop)
        dead_letters = dead_letter_topic(app_id)
        # Made before the workers start, with the fleet's partition count, so events can
        # be produced at once (the workers would declare them too).
        topics = [*domain.topic_types(), dead_letters]
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        cleanup.push_async_callback(producer.stop)
        fleet_env = {
            "MESH_BROKER_URL": f"kafka://{bootstrap}",
            "MESH_SCHEMA_REGISTRY_URL": registry_url,
            "MESH_TOPIC_PARTITIONS": str(partitions),
            "MESH_REBALANCE_TIMEOUT_S": "3",
            "MESH_ROCKSDB_BLOCK_CACHE_MB": "8",
            # No Directus here: the source adapter backs off against a closed port.
            "MESH_DIRECTUS_URL": f"http://127.0.0.1:{free_port()}",
            "MESH_DIRECTUS_TOKEN": "unused",
            **(env or {}),
        }
        workers = await start_workers(
            cleanup,
            [
                MeshWorker(
                    name,
                    app_id=app_id,
                    state_dir=root / "state" / name,
                    log_dir=logs,
                    env={
                        **fleet_env,
                        **(worker_env or {}).get(name, {}),
                        **({"MESH_GROUP_INSTANCE_ID": name} if static_membership else {}),
                    },
                )
                for name in names
            ],
        )
        schemas = load_event_schemas(domain, Settings().schemas_dir)
        fleet = Fleet(
            domain=domain,
            bootstrap=bootstrap,
            registry_url=registry_url,
            dead_letter_topic=dead_letters,
            producer=producer,
            codecs=build_codecs(domain, schemas, RegistryClient(registry_url)),
            workers=workers,
            registry=registry,
        )
        await fleet.wait_stable()
        yield fleet


async def eventually(
    worker: MeshWorker, path: str, check: Callable[[Answer], bool], *, timeout: float = TIMEOUT
) -> Answer:
    """``GET path`` on ``worker`` until ``check`` accepts the answer; return it."""
    last: list[Answer] = []

    async def ok() -> bool:
        last[:] = [await worker.get(path)]
        return check(last[0])

    await wait_until(ok, timeout=timeout, what=lambda: f"GET {path}: {last}")
    return last[0]


async def dead_letters_of(
    fleet: Fleet, topic: str, offsets: set[int], *, timeout: float = TIMEOUT
) -> dict[int, dict[str, str]]:
    """The headers of the dead letters of ``topic``'s records at ``offsets``, by offset,
    once all of them are there."""
    consumer = AIOKafkaConsumer(
        fleet.dead_letter_topic, bootstrap_servers=fleet.bootstrap, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: dict[int, dict[str, str]] = {}
    try:

        async def read() -> bool:
            batch = await consumer.getmany(timeout_ms=200)
            for message in (m for ms in batch.values() for m in ms):
                headers = {k: v.decode() for k, v in message.headers}
                if headers.get("dictamesh.topic") == topic:
                    found[int(headers["dictamesh.offset"])] = headers
            return offsets <= found.keys()

        await wait_until(read, timeout=timeout, what=lambda: f"dead letters {offsets}: {found}")
    finally:
        await consumer.stop()
    return found


def entity(entity_type: str, entity_id: object) -> str:
    """The API path of one entity."""
    return f"/api/v1/entities/{entity_type}/{entity_id}"


def at_version(version: int) -> Callable[[Answer], bool]:
    """Accepts an entity (or relations) answer once it is at ``version``."""
    return lambda a: a.status == 200 and a.body["version"] == version


def customer(name: str, status: str = "active") -> dict[str, Any]:
    """An ``after`` record of a customer (the id is added by :meth:`Fleet.send`)."""
    return {"name": name, "email": f"{name.lower()}@example.com", "status": status,
            "date_created": T0, "date_updated": None}  # fmt: skip


def product(sku: str, price: str) -> dict[str, Any]:
    """An ``after`` record of a product."""
    return {"sku": sku, "name": sku.title(), "price": Decimal(price), "stock": 5,
            "date_created": T0, "date_updated": None}  # fmt: skip


def invoice(number: str, customer_id: int | None, total: str = "10.00") -> dict[str, Any]:
    """An ``after`` record of an invoice."""
    return {"number": number, "customer": customer_id, "status": "open", "issued_at": T0,
            "total": Decimal(total), "date_created": T0, "date_updated": None}  # fmt: skip


def invoice_item(invoice_id: int, product_id: int, quantity: int = 1) -> dict[str, Any]:
    """An ``after`` record of an invoice item."""
    return {"invoice": invoice_id, "product": product_id, "quantity": quantity,
            "unit_price": Decimal("2.50"), "date_created": T0, "date_updated": None}  # fmt: skip
