"""Change capture end to end: Directus → ``mesh worker`` → Avro change events on Kafka.

Driven as a user drives it, nothing mocked: this module's own Directus 10.10.0 (a fresh
database, seeded with the 610 sample rows and the adapters' service token), its own Tansu
broker (topics are named per collection, so a shared broker would mix other tests' events)
and its own schema registry. Workers run as ``python -m mesh worker`` subprocesses
configured through ``MESH_*`` variables. Changes are made through Directus' REST API as
its admin; events are read back with aiokafka and decoded with confluent-kafka's
``AvroDeserializer``, and compared with Directus' own activity log and items.

The scenarios run in file order against one one-worker fleet (``capture-one``) where they
are independent of each other; the last one replaces it by a fleet of three workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import pytest_asyncio
from mesh_tooling.dev.directus import (
    DEFAULT_ROWS,
    DirectusService,
    DirectusSettings,
    generate_service_token,
    seed_directus,
)
from mesh_tooling.dev.process import free_port

from mesh.deadletter import dead_letter_topic
from mesh.domain import DomainConfig
from tests.fixtures.directus import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.sources.capture_fixtures import OPS, Event, EventLog, KafkaLog, expected_after
from tests.support.directus_admin import Activity, DirectusAdmin, entity_of
from tests.support.services import own_broker, start_registry
from tests.support.waiting import wait_until
from tests.support.workers import MeshWorker, states, wait_for_owner

pytestmark = [pytest.mark.directus]

APP_ONE = "capture-one"
"""The one-worker fleet of most scenarios."""
APP_THREE = "capture-three"
"""The three-worker fleet of the last scenario."""
FEED_TIMEOUT = 60.0
"""Seconds a change may take to arrive as an event (normally well under one)."""
SOURCE = "directus"

T = TypeVar("T")


@dataclass
class Stack:
    """This module's services, and how to reach them."""

    domain: DomainConfig
    root: Path
    logs: Path
    bootstrap: str
    registry_url: str
    directus: DirectusService
    admin: DirectusAdmin
    events: EventLog
    worker_env: dict[str, str]

    def worker(self, app_id: str, name: str) -> MeshWorker:
        """A worker of fleet ``app_id`` with its own state directory (not started)."""
        return MeshWorker(
            name,
            app_id=app_id,
            state_dir=self.root / "state" / app_id / name,
            log_dir=self.logs,
            env=self.worker_env,
        )

    def urn(self, entity_type: str, item: object) -> str:
        return self.domain.urn("default", entity_type, str(item))

    def key_of(self, row: Activity) -> str:
        """The event key (URN) of the entity an activity row changed."""
        return self.urn(entity_of(self.domain, row.collection)[0], row.item)


@pytest_asyncio.fixture(scope="module")
async def stack(
    directus_install: Path,
    make_database: Callable[[], str],
    sample_domain: DomainConfig,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Stack]:
    """Broker, registry and a seeded Directus of this module, an admin session on
    Directus and a reader of every ``*.directus.entity_changed`` topic."""
    root = tmp_path_factory.mktemp("capture")
    logs = root / "logs"
    async with contextlib.AsyncExitStack() as cleanup:
        bootstrap = await own_broker(cleanup, logs)
        registry, registry_url = await start_registry(root / "registry.db", logs)
        cleanup.push_async_callback(registry.stop)
        directus = DirectusService(
            DirectusSettings(
                install_dir=directus_install,
                database_url=make_database(),
                state_dir=root / "directus",
                admin_email=ADMIN_EMAIL,
                admin_password=ADMIN_PASSWORD,
                port=free_port(),
            )
        )
        await directus.bootstrap()
        await directus.start()
        cleanup.push_async_callback(directus.stop)
        token = generate_service_token()
        await seed_directus(
            directus.url, ADMIN_EMAIL, ADMIN_PASSWORD, sample_domain, service_token=token
        )
        # No keep-alive: after Directus restarts, the next request opens a new connection.
        http = await cleanup.enter_async_context(
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        )
        collections = [e.collection for e in sample_domain.entities.values()]
        admin = await DirectusAdmin.login(
            http, directus.url, ADMIN_EMAIL, ADMIN_PASSWORD, collections
        )
        events = await cleanup.enter_async_context(EventLog(bootstrap, registry_url))
        yield Stack(
            domain=sample_domain,
            root=root,
            logs=logs,
            bootstrap=bootstrap,
            registry_url=registry_url,
            directus=directus,
            admin=admin,
            events=events,
            worker_env={
                "MESH_BROKER_URL": f"kafka://{bootstrap}",
                "MESH_SCHEMA_REGISTRY_URL": registry_url,
                "MESH_DIRECTUS_URL": directus.url,
                "MESH_DIRECTUS_TOKEN": token,
                "MESH_REBALANCE_TIMEOUT_S": "3",
                "MESH_ROCKSDB_BLOCK_CACHE_MB": "8",
                "MESH_LOG_LEVEL": "info",
            },
        )


@dataclass
class OneWorkerFleet:
    """Fleet ``capture-one``: one worker, and what Directus held when it first started."""

    worker: MeshWorker
    snapshot_head: int
    """The activity head when the worker started with no cursor."""
    items_before: dict[str, list[dict[str, Any]]]
    """Every item by entity type, read just before the worker first started."""

    async def ensure_following(self) -> None:
        """(Re)start the worker if a scenario stopped it; wait until it follows the feed."""
        if not self.worker.running:
            await self.worker.start()
            await self.worker.wait_ready()
        await wait_for_owner([self.worker])


@pytest_asyncio.fixture(scope="module")
async def fleet(stack: Stack) -> AsyncIterator[OneWorkerFleet]:
    """Fleet ``capture-one`` after its first snapshot (the worker follows the feed)."""
    items = {
        name: await stack.admin.items(entity.collection)
        for name, entity in stack.domain.entities.items()
    }
    head = await stack.admin.head()
    worker = stack.worker(APP_ONE, "capture-0")
    await worker.start()
    try:
        await worker.wait_ready()
        await wait_for_owner([worker])
        yield OneWorkerFleet(worker, head, items)
    finally:
        await worker.stop()


def only(found: list[T]) -> T:
    """The one element of ``found``."""
    assert len(found) == 1, found
    return found[0]


async def _rows_of(stack: Stack, after: int, collection: str, item: object) -> list[Activity]:
    return [
        a
        for a in await stack.admin.activity(after)
        if a.collection == collection and a.item == str(item)
    ]


# -- 1. snapshot ---------------------------------------------------------------------------


async def test_snapshot_publishes_every_seeded_item_once_at_the_activity_head(
    stack: Stack, fleet: OneWorkerFleet
) -> None:
    """A worker with no cursor publishes every pre-existing item exactly once as SNAPSHOT:
    keyed by its URN on its collection's topic, ``after`` equal to the item as Directus
    returns it (decimals and timestamps typed), all at the same version: the activity
    head when the snapshot started."""
    domain, events = stack.domain, stack.events
    expected = {
        stack.urn(entity_type, item["id"]): (entity_type, item)
        for entity_type, items in fleet.items_before.items()
        for item in items
    }
    assert len(expected) == sum(DEFAULT_ROWS.values()) == 610

    def snapshots() -> list[Event]:
        return [e for e in events.events if e.op == "SNAPSHOT"]

    await events.wait_for(
        lambda: {e.key for e in snapshots()} >= expected.keys(),
        timeout=FEED_TIMEOUT,
        what=lambda: f"{len(expected.keys() - {e.key for e in snapshots()})} snapshot events",
    )
    await events.drain()  # the worker follows the feed: its snapshot is all published
    mine = [e for e in snapshots() if e.position == fleet.snapshot_head]
    assert len(mine) == len(snapshots()), "snapshot events at another version"
    counts = Counter(e.key for e in mine)
    assert {k: n for k, n in counts.items() if n != 1} == {}, "items snapshotted twice"
    assert set(counts) == set(expected)
    for event in mine:
        entity_type, item = expected[event.key]
        entity = domain.entities[entity_type]
        assert event.topic == domain.topic(entity_type)
        assert event.value["tenant"] == "default"
        assert event.headers["dictamesh.tenant"] == "default"
        assert event.key.startswith("urn:dictamesh:default:")
        assert (event.entity_type, event.entity_id) == (entity_type, str(item["id"]))
        assert event.value["source"] == {
            "system": "directus",
            "instance": SOURCE,
            "collection": entity.collection,
            "position": fleet.snapshot_head,
            "timestamp": None,
        }
        assert event.after == expected_after(entity, item), event.key
        assert event.changed_fields == list(entity.fields)
    # Spot-check the typed values of one product against Directus' JSON.
    product = fleet.items_before["product"][0]
    snap = next(e for e in mine if e.key == stack.urn("product", product["id"]))
    assert snap.after is not None
    assert snap.after["price"] == Decimal(product["price"])
    assert str(snap.after["price"]) == product["price"]  # scale 2 kept: "12.50", not "12.5"


# -- 2. create, update, delete, bulk create ----------------------------------------------------


async def test_create_update_delete_and_bulk_create_are_versioned_by_activity_id(
    stack: Stack, fleet: OneWorkerFleet
) -> None:
    """Each change made through the API becomes one event versioned by its activity id:
    CREATE with every field, UPDATE naming exactly the fields the revision changed (those
    patched, plus ``date_updated`` that Directus sets on every update), DELETE with no
    ``after``; one entity's events share a partition in version order. A bulk create of
    500 items in one request yields 500 CREATE events."""
    await fleet.ensure_following()
    admin, events, domain = stack.admin, stack.events, stack.domain
    entity = domain.entities["product"]
    start = await admin.head()

    created = await admin.create(
        "products", {"sku": "CAP-CUD-1", "name": "Capture probe", "price": "19.90", "stock": 7}
    )
    pid = str(created["id"])
    key = stack.urn("product", pid)
    (create_row,) = await _rows_of(stack, start, "products", pid)
    await events.wait_for_positions([create_row.id], timeout=FEED_TIMEOUT)
    create = only(events.changes([create_row.id]))
    assert (create.op, create.key, create.topic) == ("CREATE", key, domain.topic("product"))
    assert create.after == expected_after(entity, await admin.item("products", pid))
    assert create.after is not None
    assert create.after["price"] == Decimal("19.90")
    assert create.after["date_created"] is not None
    assert create.changed_fields == list(entity.fields)
    assert create.value["source"]["timestamp"] == create_row.timestamp

    patch = {"price": "21.50", "stock": 3}
    await admin.update("products", pid, patch)
    (update_row,) = await _rows_of(stack, create_row.id, "products", pid)
    assert update_row.action == "update"
    await events.wait_for_positions([update_row.id], timeout=FEED_TIMEOUT)
    update = only(events.changes([update_row.id]))
    assert (update.op, update.key) == ("UPDATE", key)
    assert sorted(update.changed_fields) == sorted([*patch, "date_updated"])
    after_update = await admin.item("products", pid)
    assert update.after == expected_after(entity, after_update)
    assert update.after is not None
    assert (update.after["price"], update.after["stock"]) == (Decimal("21.50"), 3)
    assert update.after["date_updated"] is not None

    await admin.delete("products", pid)
    (delete_row,) = await _rows_of(stack, update_row.id, "products", pid)
    assert delete_row.action == "delete"
    await events.wait_for_positions([delete_row.id], timeout=FEED_TIMEOUT)
    delete = only(events.changes([delete_row.id]))
    assert (delete.op, delete.key, delete.after, delete.changed_fields) == (
        "DELETE",
        key,
        None,
        [],
    )

    trail = [create, update, delete]
    assert [e.position for e in trail] == [create_row.id, update_row.id, delete_row.id]
    assert create_row.id < update_row.id < delete_row.id
    assert len({(e.topic, e.partition) for e in trail}) == 1, "one partition per entity"
    assert [e.offset for e in trail] == sorted(e.offset for e in trail)

    # Bulk: one POST with 500 items.
    start = await admin.head()
    rows_in = [
        {"name": f"Bulk {i}", "email": f"bulk.{i}@example.com", "status": "prospect"}
        for i in range(500)
    ]
    out = await admin.create("customers", rows_in)
    ids = {str(r["id"]) for r in out}
    assert len(ids) == 500
    rows = await admin.activity(start)
    assert [(r.action, r.collection) for r in rows] == [("create", "customers")] * 500
    assert {r.item for r in rows} == ids
    await events.wait_for_positions([r.id for r in rows], timeout=FEED_TIMEOUT)
    await events.drain()
    bulk = events.changes(r.id for r in rows)
    assert len(bulk) == 500
    assert {e.op for e in bulk} == {"CREATE"}
    items = {str(i["id"]): i for i in await admin.items("customers", ids)}
    customer = domain.entities["customer"]
    for row in rows:
        event = only([e for e in bulk if e.position == row.id])
        assert event.key == stack.urn("customer", row.item)
        assert event.after == expected_after(customer, items[row.item])


# -- 3. SIGKILL mid-stream ----------------------------------------------------------------------


async def test_worker_killed_mid_stream_resumes_and_loses_no_change(
    stack: Stack, fleet: OneWorkerFleet
) -> None:
    """A worker killed with SIGKILL while it publishes a bulk load (and another bulk is
    still being written) and restarted with the same name and state resumes from its
    stored cursor (no second snapshot): every activity row yields its event, and a change
    published twice is published with the same version and the same payload."""
    await fleet.ensure_following()
    admin, events = stack.admin, stack.events
    start = await admin.head()

    def bulk(n: int) -> list[dict[str, Any]]:
        return [
            {"name": f"Crash {n}-{i}", "email": f"crash.{n}.{i}@example.com", "status": "active"}
            for i in range(500)
        ]

    await events.drain()
    snapshots = sum(e.op == "SNAPSHOT" for e in events.events)
    await admin.create("customers", bulk(1))
    second = asyncio.create_task(admin.create("customers", bulk(2)))
    try:
        # Kill as soon as the first event of the first bulk is on Kafka: mid-stream.
        await events.wait_for(
            lambda: any(e.position > start for e in events.changes()),
            timeout=FEED_TIMEOUT,
            what="the first event of the bulk load",
        )
        await fleet.worker.kill()
        published_before_kill = len({e.position for e in events.changes() if e.position > start})
    finally:
        await second
    rows = await admin.activity(start)
    assert len(rows) == 1000
    assert published_before_kill < len(rows), "the worker was not killed mid-stream"

    await fleet.ensure_following()  # same name, same state directory
    await events.wait_for_positions([r.id for r in rows], timeout=FEED_TIMEOUT)
    await events.drain()
    by_version: dict[tuple[str, int], list[Event]] = defaultdict(list)
    for event in events.changes(r.id for r in rows):
        by_version[(event.key, event.position)].append(event)
    for row in rows:
        published = by_version.pop((stack.key_of(row), row.id), [])
        assert published, f"activity {row.id} ({row.action} {row.item}) has no event"
        assert {e.op for e in published} == {OPS[row.action]}
        first = published[0].payload()
        assert all(e.payload() == first for e in published), f"activity {row.id} differs"
    assert not by_version, f"events at versions matching no activity row: {list(by_version)}"
    assert sum(e.op == "SNAPSHOT" for e in events.events) == snapshots, "cursor lost"


# -- 4. Directus down and back -----------------------------------------------------------------


async def test_directus_restart_is_backed_off_and_loses_no_change(
    stack: Stack, fleet: OneWorkerFleet
) -> None:
    """While Directus is down the worker retries with backoff and says so in /metrics
    (``dictamesh_source_errors_total`` grows, state 3); changes made just before the stop
    and right after the restart all arrive, and the worker follows the feed again."""
    await fleet.ensure_following()
    admin, events, worker = stack.admin, stack.events, fleet.worker
    start = await admin.head()
    errors = "dictamesh_source_errors_total"
    errors_before = (await worker.metrics()).value(errors, source=SOURCE)
    customer = fleet.items_before["customer"][1]["id"]

    await admin.update("customers", customer, {"status": "inactive", "name": "Before Stop"})
    await stack.directus.stop()
    seen: dict[str, float] = {}
    try:

        async def backing_off() -> bool:
            metrics = await worker.metrics()
            seen["errors"] = metrics.value(errors, source=SOURCE)
            seen["state"] = metrics.value("dictamesh_source_state", source=SOURCE)
            return seen["errors"] > errors_before and seen["state"] == 3

        await wait_until(
            backing_off, timeout=30, what=lambda: f"errors and backoff in /metrics: {seen}"
        )
    finally:
        await stack.directus.start()
    created = await admin.create(
        "products", {"sku": "CAP-RESTART", "name": "After restart", "price": "3.10", "stock": 1}
    )
    rows = await admin.activity(start)
    assert [(r.action, r.collection, r.item) for r in rows] == [
        ("update", "customers", str(customer)),
        ("create", "products", str(created["id"])),
    ]
    await events.wait_for_positions([r.id for r in rows], timeout=FEED_TIMEOUT)
    update, create = (only(events.changes([r.id])) for r in rows)
    assert update.op == "UPDATE"
    assert update.after is not None
    assert (update.after["status"], update.after["name"]) == ("inactive", "Before Stop")
    assert create.op == "CREATE"
    assert create.after is not None
    assert create.after["sku"] == "CAP-RESTART"
    after = await worker.metrics()
    assert after.value(errors, source=SOURCE, error="SourceError") > 0
    await wait_for_owner([worker])


# -- 5. dead letters ----------------------------------------------------------------------------


async def test_item_breaking_the_schema_is_dead_lettered_and_the_feed_goes_on(
    stack: Stack, fleet: OneWorkerFleet
) -> None:
    """An item whose value breaks the event schema (a product without ``sku``, allowed
    after an admin made the Directus field optional; the domain says it is required) goes
    to ``<app_id>.dead_letters`` with headers naming source, collection, item, position,
    stage and error, and is not published; the next valid change of the same item is."""
    await fleet.ensure_following()
    admin, events, worker = stack.admin, stack.events, fleet.worker
    optional = {"schema": {"is_nullable": True}, "meta": {"required": False}}
    await admin.api.request("PATCH", "/fields/products/sku", optional)
    bad_id: str | None = None
    try:
        start = await admin.head()
        bad = await admin.create(
            "products", {"sku": None, "name": "No SKU", "price": "5.00", "stock": 1}
        )
        bad_id = str(bad["id"])
        (create_row,) = await _rows_of(stack, start, "products", bad_id)
        async with KafkaLog(stack.bootstrap, rf"^{re.escape(dead_letter_topic(APP_ONE))}$") as dlq:
            await dlq.wait_for(
                lambda: any(r.headers.get("dictamesh.item") == bad_id for r in dlq.records),
                timeout=FEED_TIMEOUT,
                what=f"a dead letter for product {bad_id}",
            )
            letter = only([r for r in dlq.records if r.key == f"directus/products/{bad_id}"])
        assert letter.topic == f"{APP_ONE}.dead_letters"
        headers = dict(letter.headers)
        message = headers.pop("dictamesh.error.message")
        assert headers == {
            "dictamesh.source": SOURCE,
            "dictamesh.collection": "products",
            "dictamesh.item": bad_id,
            "dictamesh.position": str(create_row.id),
            "dictamesh.stage": "map",
            "dictamesh.error.class": "SourceDataError",
        }
        assert "'sku'" in message
        assert "null" in message
        payload = json.loads(letter.value)
        assert (payload["id"], payload["sku"], payload["name"]) == (int(bad_id), None, "No SKU")

        # The feed goes on: the fix is the next version of the same product.
        await admin.update("products", bad_id, {"sku": "CAP-FIXED"})
        (update_row,) = await _rows_of(stack, create_row.id, "products", bad_id)
        await events.wait_for_positions([update_row.id], timeout=FEED_TIMEOUT)
        fixed = only(events.changes([update_row.id]))
        assert fixed.op == "UPDATE"
        assert fixed.after is not None
        assert fixed.after["sku"] == "CAP-FIXED"
        # Same key, same partition, read in order: a published bad version would be here.
        assert events.changes([create_row.id]) == []
        metrics = await worker.metrics()
        dead = metrics.value("dictamesh_source_dead_letters_total", collection="products")
        assert dead >= 1
    finally:
        if bad_id is not None:
            await admin.delete("products", bad_id)
        required = {"schema": {"is_nullable": False}, "meta": {"required": True}}
        await admin.api.request("PATCH", "/fields/products/sku", required)


# -- 6. deleted before read ---------------------------------------------------------------------


async def test_item_deleted_before_it_was_read_yields_delete_events(
    stack: Stack, fleet: OneWorkerFleet
) -> None:
    """An item created and deleted while no worker polled cannot be read any more: its
    create activity yields a DELETE (at the create's version), its delete activity
    another DELETE; never a CREATE. The restarted worker resumes from its cursor (no
    second snapshot)."""
    await fleet.ensure_following()
    admin, events = stack.admin, stack.events
    await fleet.worker.stop()
    await events.drain()
    snapshots = sum(e.op == "SNAPSHOT" for e in events.events)
    start = await admin.head()
    made = await admin.create(
        "products", {"sku": "CAP-GONE", "name": "Short-lived", "price": "1.00", "stock": 1}
    )
    pid = str(made["id"])
    await admin.delete("products", pid)
    create_row, delete_row = await admin.activity(start)
    assert (create_row.action, delete_row.action) == ("create", "delete")

    await fleet.ensure_following()
    await events.wait_for_positions([create_row.id, delete_row.id], timeout=FEED_TIMEOUT)
    await events.drain()
    trail = [e for e in events.events if e.key == stack.urn("product", pid)]
    assert [(e.op, e.position, e.after) for e in trail] == [
        ("DELETE", create_row.id, None),
        ("DELETE", delete_row.id, None),
    ]
    assert trail[0].value["source"]["timestamp"] == create_row.timestamp
    assert sum(e.op == "SNAPSHOT" for e in events.events) == snapshots, "cursor lost"


# -- 7. a fleet of three ------------------------------------------------------------------------


async def test_three_workers_of_one_fleet_publish_each_change_exactly_once(
    stack: Stack, fleet: OneWorkerFleet
) -> None:
    """Three workers of one fleet (one ``MESH_APP_ID``): exactly one polls the source
    (the owner of its cursor's partition; the others report state 0), and every change is
    published exactly once, by that worker."""
    await fleet.worker.stop()  # only the fleet under test may publish
    admin, events, domain = stack.admin, stack.events, stack.domain
    head = await admin.head()
    existing = {
        stack.urn(name, item["id"]): (name, item)
        for name, entity in domain.entities.items()
        for item in await admin.items(entity.collection)
    }
    workers = [stack.worker(APP_THREE, f"fleet-{i}") for i in range(3)]
    try:
        await asyncio.gather(*(w.start() for w in workers))
        await asyncio.gather(*(w.wait_ready(120) for w in workers))
        owner = await wait_for_owner(workers, timeout=120)

        # The new fleet's snapshot (customers now span several keyset pages) is complete;
        # a rebalance while the workers joined may repeat part of it, with equal payloads.
        def snapshot() -> dict[str, list[Event]]:
            found: dict[str, list[Event]] = defaultdict(list)
            for e in events.events:
                if e.op == "SNAPSHOT" and e.position == head:
                    found[e.key].append(e)
            return found

        await events.wait_for(
            lambda: snapshot().keys() >= existing.keys(),
            timeout=FEED_TIMEOUT,
            what=lambda: f"{len(existing.keys() - snapshot().keys())} snapshot events",
        )
        await events.drain()
        snapped = snapshot()
        assert snapped.keys() == existing.keys()
        assert len(existing) > 1500
        for key, copies in snapped.items():
            entity_type, item = existing[key]
            expected = expected_after(domain.entities[entity_type], item)
            assert all(e.after == expected for e in copies), key

        start = await admin.head()

        customers = [
            await admin.create(
                "customers",
                {"name": f"Fleet {i}", "email": f"fleet.{i}@example.com", "status": "active"},
            )
            for i in range(8)
        ]
        products = [
            await admin.create(
                "products",
                {"sku": f"CAP-FLEET-{i}", "name": f"Fleet {i}", "price": "2.50", "stock": i},
            )
            for i in range(4)
        ]
        # Created items are read before they change again: each create yields a CREATE.
        created = await admin.activity(start)
        await events.wait_for_positions([r.id for r in created], timeout=FEED_TIMEOUT)
        for customer in customers[:4]:
            await admin.update("customers", customer["id"], {"status": "inactive"})
        for product in products[:2]:
            await admin.delete("products", product["id"])
        rows = await admin.activity(start)
        assert len(rows) == 18
        await events.wait_for_positions([r.id for r in rows], timeout=FEED_TIMEOUT)
        # A last change: once its event is in, a second poller's copies would be too.
        await admin.update("customers", customers[-1]["id"], {"status": "prospect"})
        rows = await admin.activity(start)
        await events.wait_for_positions([r.id for r in rows], timeout=FEED_TIMEOUT)
        await events.drain()

        published = events.changes(r.id for r in rows)
        counts = Counter(e.position for e in published)
        assert counts == Counter({r.id: 1 for r in rows}), "a change published twice"
        for row in rows:
            event = only([e for e in published if e.position == row.id])
            assert (event.op, event.key) == (OPS[row.action], stack.key_of(row))
        final = await states(workers)
        assert sorted(final.values()) == [0, 0, 2], final
        assert final[owner.name] == 2, "the source moved while changes were made"
        for worker in workers:
            metrics = await worker.metrics()
            changes = sum(
                metrics.value("dictamesh_source_events_total", source=SOURCE, op=op)
                for op in OPS.values()
            )
            assert changes == (len(rows) if worker is owner else 0), worker.name
    finally:
        await asyncio.gather(*(w.stop() for w in workers))
