"""The scale-out scenario of ``tests/catalog/test_scale_out.py``: a fleet grown from one
worker to three on a fresh stack, random Directus edits, one worker killed and restarted.

Kept apart from the test so that the soak command (``make soak``) and the test share one
definition of the scenario.
"""

from __future__ import annotations

import contextlib
import json
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from tests.support.auth import bearer
from tests.support.directus_admin import DirectusAdmin
from tests.support.services import own_broker
from tests.support.workers import MeshWorker, wait_for_owner, wait_stable

RELATIONS_QUERY = "query Relations($id: ID!) { customer(id: $id) { invoices { id } } }"
NO_CACHE = {"Cache-Control": "no-cache"}


@dataclass
class ScaleOutFleet:
    """Three workers of one fresh stack: ``worker-0`` started alone (as ``mesh dev`` does),
    then ``worker-1`` and ``worker-2`` added with empty state directories."""

    workers: list[MeshWorker]
    bootstrap: str

    def worker(self, name: str) -> MeshWorker:
        return next(w for w in self.workers if w.name == name)

    async def scale_out(self, names: Sequence[str]) -> None:
        """Start ``names`` and wait until every worker is ready and owns partitions."""
        added = [self.worker(n) for n in names]
        for worker in added:
            await worker.start()
        for worker in added:
            await worker.wait_ready()
        await wait_stable(self.workers, timeout=120, interval=0.25)

    def errors(self) -> list[str]:
        return [f"{w.name}: {line}" for w in self.workers for line in w.errors()]


async def start_scale_out_fleet(
    cleanup: contextlib.AsyncExitStack,
    *,
    root: Path,
    env: Mapping[str, str],
) -> ScaleOutFleet:
    """A broker of its own and ``worker-0`` following Directus alone (snapshot done);
    ``worker-1`` and ``worker-2`` are prepared, not started. ``env`` holds the stack's
    registry, Directus, Redis and mirror settings; partitions and timeouts keep their
    defaults, as ``mesh dev`` leaves them."""
    bootstrap = await own_broker(cleanup, root / "logs")
    app_id = f"scale-out-{uuid.uuid4().hex[:8]}"  # Redis is shared: keys of no other run
    full_env = {
        "MESH_BROKER_URL": f"kafka://{bootstrap}",
        "MESH_ROCKSDB_BLOCK_CACHE_MB": "8",
        **env,
    }
    workers = [
        MeshWorker(name, app_id=app_id, state_dir=root / name, log_dir=root / "logs", env=full_env)
        for name in ("worker-0", "worker-1", "worker-2")
    ]
    for worker in workers:
        cleanup.push_async_callback(worker.stop)
    first = workers[0]
    await first.start()
    await first.wait_ready(timeout=120)
    await wait_for_owner([first], timeout=120)
    return ScaleOutFleet(workers, bootstrap)


@dataclass
class Operations:
    """The scenario's edits through Directus' REST API, as the issue describes them."""

    admin: DirectusAdmin
    rng: random.Random
    customers: list[int] = field(default_factory=list)
    invoices: list[int] = field(default_factory=list)
    done: dict[str, int] = field(default_factory=dict)
    serial: int = 0

    def _count(self, what: str) -> None:
        self.done[what] = self.done.get(what, 0) + 1

    async def create_customer(self) -> None:
        self.serial += 1
        made = await self.admin.create(
            "customers",
            {"name": f"Scale-out {self.serial}", "email": None, "status": "active"},
        )
        self.customers.append(int(made["id"]))
        self._count("create customer")

    async def create_invoice(self) -> None:
        self.serial += 1
        made = await self.admin.create(
            "invoices",
            {
                "number": f"SO-{self.serial}",
                "customer": self.rng.choice(self.customers),
                "status": "open",
                "total": "10.00",
            },
        )
        self.invoices.append(int(made["id"]))
        self._count("create invoice")

    async def rename_customer(self) -> None:
        self.serial += 1
        item = self.rng.choice(self.customers)
        await self.admin.update("customers", item, {"name": f"Renamed {self.serial}"})
        self._count("rename customer")

    async def repoint_invoice(self) -> None:
        item = self.rng.choice(self.invoices)
        await self.admin.update("invoices", item, {"customer": self.rng.choice(self.customers)})
        self._count("re-point invoice")

    async def remove(self) -> None:
        """Delete what was made, invoices first (the session's Directus is shared: other
        tests count the seed's rows)."""
        for item in self.invoices:
            await self.admin.delete("invoices", item)
        for item in self.customers:
            await self.admin.delete("customers", item)

    async def random_operation(self) -> None:
        """40% rename a customer, 40% re-point an invoice, 20% create a customer."""
        roll = self.rng.random()
        if roll < 0.4:
            await self.rename_customer()
        elif roll < 0.8:
            await self.repoint_invoice()
        else:
            await self.create_customer()


async def directus_invoices_of(admin: DirectusAdmin, customer: int) -> set[str]:
    """``GET /items/invoices?filter[customer][_eq]=ID``: the truth."""
    rows = await admin.api.request(
        "GET",
        "/items/invoices",
        params={"filter[customer][_eq]": str(customer), "fields": "id", "limit": "-1"},
    )
    return {str(row["id"]) for row in rows}


async def _graphql(
    http: aiohttp.ClientSession, worker: MeshWorker, customer: int, headers: Mapping[str, str]
) -> set[str] | str:
    async with http.post(
        f"{worker.base}/graphql",
        json={"query": RELATIONS_QUERY, "variables": {"id": str(customer)}},
        headers={**bearer(), **headers},
    ) as resp:
        answer = await resp.json(content_type=None)
    if resp.status != 200 or answer.get("errors") or answer["data"]["customer"] is None:
        return f"HTTP {resp.status} {answer}"
    return {str(i["id"]) for i in answer["data"]["customer"]["invoices"]}


async def _rest(http: aiohttp.ClientSession, worker: MeshWorker, customer: int) -> set[str] | str:
    url = f"{worker.base}/api/v1/entities/customer/{customer}/relations"
    async with http.get(url, headers=bearer()) as resp:
        body: Any = await resp.json(content_type=None)
    if resp.status != 200:
        return f"HTTP {resp.status} {body}"
    return {str(m["id"]) for m in body["reverse"]["invoices"]["members"]}


async def relation_differences(
    http: aiohttp.ClientSession,
    admin: DirectusAdmin,
    workers: Sequence[MeshWorker],
    customers: Sequence[int],
) -> list[str]:
    """Every way a worker's answer about ``customer.invoices`` differs from Directus:
    GraphQL (cached and ``no-cache``) and REST, on every worker."""
    wrong: list[str] = []
    for customer in customers:
        truth = await directus_invoices_of(admin, customer)
        for worker in workers:
            try:
                answers = {
                    "graphql": await _graphql(http, worker, customer, {}),
                    "graphql no-cache": await _graphql(http, worker, customer, NO_CACHE),
                    "rest": await _rest(http, worker, customer),
                }
            except (aiohttp.ClientError, TimeoutError) as exc:
                wrong.append(f"customer {customer} on {worker.name}: no answer ({exc!r})")
                continue
            for face, got in answers.items():
                if got != truth:
                    shown = sorted(got, key=int) if isinstance(got, set) else got
                    wrong.append(
                        f"customer {customer} on {worker.name} ({face}): "
                        f"Directus {sorted(truth, key=int)}, mesh {shown}"
                    )
    return wrong


async def dump_topics(bootstrap: str, registry_url: str, path: Path) -> Path:
    """Write every record the broker holds to ``path`` (JSON lines) for a post-mortem:
    change events decoded, JSON values (relation changes, changelogs) as they are."""
    deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_url}))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in sorted(await consumer.topics())
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        with path.open("w") as out:
            # An empty fetch ends it: Tansu's reported end offsets can fall short.
            while batch := await consumer.getmany(timeout_ms=2000, max_records=10_000):
                for records in batch.values():
                    for r in records:
                        out.write(json.dumps(_dump_row(r, deserializer), default=str) + "\n")
    finally:
        await consumer.stop()
    return path


def _dump_row(r: Any, deserializer: AvroDeserializer) -> dict[str, Any]:
    value: Any
    if r.topic.endswith(".entity_changed"):
        event: Any = deserializer(r.value, SerializationContext(r.topic, MessageField.VALUE))
        value = {k: event[k] for k in ("entity_id", "op", "source", "after")}
    else:
        try:
            value = json.loads(r.value) if r.value else None
        except ValueError:
            value = r.value[:200].hex()
    key = (r.key or b"").decode(errors="replace")
    return {"topic": r.topic, "partition": r.partition, "offset": r.offset, "key": key,
            "value": value}  # fmt: skip
