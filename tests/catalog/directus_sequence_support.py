"""The random Directus edits, the truth read back from Directus, and the comparisons of
``tests/catalog/test_directus_sequence.py``."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import aiohttp
import psycopg2
import psycopg2.extras
from psycopg2 import sql

from mesh.catalog.fold import ReverseRelation, reverse_relations
from mesh.domain import DomainConfig, FieldSpec, FieldType
from tests.support.auth import bearer
from tests.support.directus_admin import DirectusAdmin, entity_of
from tests.support.workers import MeshWorker

ENTITY_TYPES = ("customer", "product", "invoice", "invoice_item")


# -- values ---------------------------------------------------------------------------------


def money(rng: random.Random) -> str:
    """A ``decimal(12,2)`` as Directus takes it, edge values included."""
    cents = rng.choice(
        [0, 1, 99, rng.randint(100, 99_999), rng.randint(100_000, 10**12 - 1), 10**12 - 1]
    )
    return f"{cents // 100}.{cents % 100:02d}"


def moment(rng: random.Random) -> str:
    """A timestamp with milliseconds (what Directus keeps), in UTC as ISO 8601."""
    start = datetime(2020, 1, 1, tzinfo=UTC)
    at = start + timedelta(milliseconds=rng.randint(0, 8 * 365 * 24 * 3600 * 1000))
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the sequence -----------------------------------------------------------------------------


@dataclass
class Edits:
    """Random edits made through Directus' API, touching only rows made here."""

    admin: DirectusAdmin
    domain: DomainConfig
    rng: random.Random
    live: dict[str, list[int]] = field(default_factory=lambda: {t: [] for t in ENTITY_TYPES})
    """Ids made here that were not deleted here, per entity type."""
    made: dict[str, set[int]] = field(default_factory=lambda: {t: set() for t in ENTITY_TYPES})
    """Every id made here, per entity type."""
    done: Counter[str] = field(default_factory=Counter)
    """How often each kind of change was made (the sequence's coverage)."""
    serial: int = 0

    def collection(self, entity_type: str) -> str:
        return self.domain.entities[entity_type].collection

    def ref(self, entity_type: str) -> int | None:
        """A live parent of ``entity_type`` made here, sometimes none."""
        pool = self.live[entity_type]
        return self.rng.choice(pool) if pool and self.rng.random() < 0.9 else None

    def value(self, entity_type: str, name: str) -> Any:
        """A new value of one editable field."""
        rng, n = self.rng, self.serial
        match entity_type, name:
            case "customer", "name":
                return rng.choice([f"Sequence {n}", f"Séquence «{n}» 顧客"])
            case "customer", "email":
                return rng.choice([None, f"sequence.{n}@example.com"])
            case "customer", "status":
                return rng.choice(["active", "inactive", "prospect"])
            case "invoice", "status":
                return rng.choice(["draft", "open", "paid", "void"])
            case "product", "sku":
                return f"SEQ-{n}"
            case "product", "name":
                return f"Sequence product {n}"
            case ("product", "price") | ("invoice", "total") | ("invoice_item", "unit_price"):
                return money(rng)
            case ("product", "stock") | ("invoice_item", "quantity"):
                return rng.randint(0, 10_000)
            case "invoice", "number":
                return f"SEQ-INV-{n}"
            case "invoice", "customer":
                return self.ref("customer")
            case "invoice", "issued_at":
                return rng.choice([None, moment(rng)])
            case "invoice_item", "invoice":
                return self.ref("invoice")
            case "invoice_item", "product":
                return self.ref("product")
            case ("invoice", "saga_key") | ("invoice_item", "saga_key"):
                # Unique in Directus (a saga's idempotency key): never the same twice.
                return rng.choice([None, f"seq-saga-{entity_type}-{n}"])
        raise AssertionError(f"no values for {entity_type}.{name}")

    def editable(self, entity_type: str) -> list[str]:
        """The fields Directus lets a user write (not the key, not its own timestamps)."""
        entity = self.domain.entities[entity_type]
        return [f for f in entity.fields if f != entity.key and not f.startswith("date_")]

    async def create(self, entity_type: str) -> None:
        self.serial += 1
        values = {f: self.value(entity_type, f) for f in self.editable(entity_type)}
        made = await self.admin.create(self.collection(entity_type), values)
        self.live[entity_type].append(int(made["id"]))
        self.made[entity_type].add(int(made["id"]))
        self.done[f"create {entity_type}"] += 1

    async def update(self, entity_type: str, only: list[str] | None = None) -> None:
        if not self.live[entity_type]:
            await self.create(entity_type)
            return
        self.serial += 1
        fields = self.editable(entity_type)
        names = only or self.rng.sample(fields, self.rng.randint(1, len(fields)))
        item = self.rng.choice(self.live[entity_type])
        patch = {f: self.value(entity_type, f) for f in names}
        await self.admin.update(self.collection(entity_type), item, patch)
        self.done[f"update {entity_type}" if only is None else f"re-point {entity_type}"] += 1

    async def delete(self, entity_type: str, item: int | None = None) -> None:
        if item is None:
            if not self.live[entity_type]:
                await self.create(entity_type)
                return
            item = self.rng.choice(self.live[entity_type])
        children = await self.children_of(entity_type, [item])
        await self.admin.delete(self.collection(entity_type), item)
        self.live[entity_type].remove(item)
        self.done[f"delete {entity_type}"] += 1
        if children:
            self.done[f"delete {entity_type} with children"] += 1

    async def delete_a_parent(self, entity_type: str) -> None:
        """Delete a parent that children point at. Called last: nothing changes those
        children afterwards but the database nulling their field (``ON DELETE SET NULL``)."""
        for parent in self.live[entity_type]:
            if await self.children_of(entity_type, [parent]):
                await self.delete(entity_type, parent)
                self.done[f"last change: delete {entity_type} with children"] += 1
                return
        raise AssertionError(f"the sequence left no {entity_type} with children to delete")

    async def repoint_items_at_once(self) -> None:
        """Several items moved to one invoice by one request (one activity row each)."""
        items, invoices = self.live["invoice_item"], self.live["invoice"]
        if len(items) < 2 or not invoices:
            await self.create("invoice_item")
            return
        keys = self.rng.sample(items, self.rng.randint(2, min(5, len(items))))
        data = {"invoice": self.rng.choice(invoices)}
        await self.admin.api.request(
            "PATCH", f"/items/{self.collection('invoice_item')}", {"keys": keys, "data": data}
        )
        self.done["re-point items in one request"] += 1

    async def delete_items_at_once(self) -> None:
        items = self.live["invoice_item"]
        if len(items) < 2:
            await self.create("invoice_item")
            return
        keys = self.rng.sample(items, self.rng.randint(2, min(4, len(items))))
        await self.admin.api.request("DELETE", f"/items/{self.collection('invoice_item')}", keys)
        for key in keys:
            items.remove(key)
        self.done["delete items in one request"] += 1

    async def children_of(self, entity_type: str, ids: list[int]) -> list[int]:
        """Ids of the items of any collection that point at ``ids`` (as Directus has them)."""
        found: list[int] = []
        for child_type, entity in self.domain.entities.items():
            for name, spec in entity.fields.items():
                if spec.references == entity_type:
                    # Not only the config's reverse relations: products have none, yet
                    # deleting one nulls its items' field all the same.
                    rel = ReverseRelation(name, entity_type, child_type, name)
                    found += (await directus_children(self.admin, self.domain, rel, ids)).keys()
        return found

    async def step(self) -> None:
        """One change, chosen at random (mostly invoices and items)."""
        changes: list[tuple[int, Callable[[], Awaitable[None]]]] = [
            (5, lambda: self.create("customer")),
            (4, lambda: self.update("customer")),
            (3, lambda: self.delete("customer")),
            (4, lambda: self.create("product")),
            (3, lambda: self.update("product")),
            (2, lambda: self.delete("product")),
            (10, lambda: self.create("invoice")),
            (6, lambda: self.update("invoice")),
            (6, lambda: self.update("invoice", only=["customer"])),
            (4, lambda: self.delete("invoice")),
            (14, lambda: self.create("invoice_item")),
            (6, lambda: self.update("invoice_item")),
            (8, lambda: self.update("invoice_item", only=["invoice"])),
            (2, lambda: self.update("invoice_item", only=["product"])),
            (5, lambda: self.delete("invoice_item")),
            (2, self.repoint_items_at_once),
            (2, self.delete_items_at_once),
        ]
        weights = [w for w, _ in changes]
        (change,) = self.rng.choices([c for _, c in changes], weights=weights)
        await change()

    async def run(self, count: int) -> None:
        # Parents first, so that the first invoices and items have something to point at.
        for entity_type in ("customer", "customer", "product", "product", "invoice"):
            await self.create(entity_type)
        for _ in range(count):
            await self.step()
        for entity_type in ("customer", "invoice", "product"):
            await self.delete_a_parent(entity_type)

    async def remove_leftovers(self) -> None:
        """Delete what this sequence left in Directus, children first (the seed's counts)."""
        for entity_type in reversed(ENTITY_TYPES):
            ids = sorted(self.made[entity_type])
            left = [
                int(i["id"])
                for i in await directus_items(self.admin, self.collection(entity_type), ids)
            ]
            if left:
                await self.admin.api.request(
                    "DELETE", f"/items/{self.collection(entity_type)}", left
                )


# -- Directus' state ---------------------------------------------------------------------------


async def directus_items(
    admin: DirectusAdmin, collection: str, ids: Iterable[int]
) -> list[dict[str, Any]]:
    """The items of ``collection`` with ``ids`` that exist, every field."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    return [dict(i) for i in await admin.items(collection, wanted)]


async def directus_children(
    admin: DirectusAdmin, domain: DomainConfig, rel: ReverseRelation, parents: Iterable[int]
) -> dict[int, int]:
    """Child id → parent id for every child whose ``rel.field`` holds one of ``parents``."""
    wanted = sorted(set(parents))
    if not wanted:
        return {}
    rows = await admin.api.request(
        "GET",
        f"/items/{domain.entities[rel.child_type].collection}",
        params={
            "filter": json.dumps({rel.field: {"_in": wanted}}),
            "fields": f"id,{rel.field}",
            "limit": "-1",
        },
    )
    return {int(r["id"]): int(r[rel.field]) for r in rows}


@dataclass(frozen=True)
class Truth:
    """What Directus holds for every entity the sequence made."""

    live: dict[str, dict[int, dict[str, Any]]]
    """Entity type → id → the item as Directus returns it."""
    deleted: dict[str, set[int]]
    versions: dict[str, dict[int, int]]
    """Entity type → id → the id of the item's last activity row."""
    deletes: dict[str, list[int]]
    """Entity type → activity ids of the deletes of its items."""
    children: dict[tuple[str, int, str], set[str]]
    """(parent type, parent id, relation) → ids of the children pointing at the parent."""

    def versions_for(self, domain: DomainConfig, entity_type: str, entity_id: int) -> set[int]:
        """The versions the entity may be at: its last activity, or a later delete of an
        entity of a type it references (which may have cleared its reference)."""
        own = self.versions[entity_type][entity_id]
        referenced = {f.references for f in domain.entities[entity_type].fields.values()}
        later = {d for t in referenced if t for d in self.deletes.get(t, ()) if d > own}
        return {own} | later

    def want(self, entity_type: str, entity_id: int) -> str:
        """What :meth:`versions_for` allows, for failure messages."""
        own = self.versions[entity_type][entity_id]
        return f"want its last activity {own} or a later delete of an entity it references"


async def read_truth(admin: DirectusAdmin, domain: DomainConfig, edits: Edits, start: int) -> Truth:
    live: dict[str, dict[int, dict[str, Any]]] = {}
    deleted: dict[str, set[int]] = {}
    for entity_type, ids in edits.made.items():
        items = await directus_items(admin, domain.entities[entity_type].collection, ids)
        live[entity_type] = {int(i["id"]): i for i in items}
        deleted[entity_type] = ids - live[entity_type].keys()
    versions: dict[str, dict[int, int]] = defaultdict(dict)
    deletes: dict[str, list[int]] = defaultdict(list)
    for row in await admin.activity(start):
        entity_type = entity_of(domain, row.collection)[0]
        if int(row.item) in edits.made[entity_type]:
            versions[entity_type][int(row.item)] = row.id  # rows come oldest first
            if row.action == "delete":
                deletes[entity_type].append(row.id)
    children: dict[tuple[str, int, str], set[str]] = {}
    for rel in reverse_relations(domain):
        name = rel.name.split(".", 1)[1]
        parents = edits.made[rel.parent_type]
        for parent in parents:
            children[(rel.parent_type, parent, name)] = set()
        for child, parent in (await directus_children(admin, domain, rel, parents)).items():
            children[(rel.parent_type, parent, name)].add(str(child))
    return Truth(live, deleted, dict(versions), dict(deletes), children)


# -- comparing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Odd:
    """A value that does not have its field's representation (kept to show it)."""

    why: str
    value: Any


def normal(spec: FieldSpec, value: Any) -> Any:
    """``value`` of a field as a comparable Python value, whichever side it was read from.

    Decimals are JSON strings in Directus and in the REST API, ``Decimal`` in Postgres and
    JSON numbers in the mirror's ``data`` (read as ``Decimal``); timestamps are ISO 8601
    strings or ``datetime``. Anything else has to match as it is, type included.
    """
    if value is None:
        return None
    match spec.type:
        case FieldType.DECIMAL:
            if isinstance(value, str | Decimal | int) and not isinstance(value, bool):
                return Decimal(str(value))
            return Odd("not an exact decimal", value)
        case FieldType.TIMESTAMP:
            try:
                at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
            except ValueError:
                return Odd("not an ISO 8601 timestamp", value)
            if at.tzinfo is None:
                return Odd("a timestamp without a time zone", value)
            return at.astimezone(UTC)
        case FieldType.FLOAT if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return value


def compare_fields(
    domain: DomainConfig,
    truth: Truth,
    entity_type: str,
    entity_id: int,
    got: Mapping[str, Any],
    where: str,
) -> list[str]:
    """One line per field of the domain config whose value ``where`` differs from Directus'
    (naming the parent when a reference points at one Directus deleted)."""
    want = truth.live[entity_type][entity_id]
    wrong = []
    for name, spec in domain.entities[entity_type].fields.items():
        what = f"{entity_type} {entity_id}.{name}"
        if name not in want:
            wrong.append(f"{what}: Directus did not return the field")
        elif name not in got:
            wrong.append(f"{what}: {where} has no such field")
        elif normal(spec, want[name]) != normal(spec, got[name]):
            gone = spec.references is not None and got[name] in truth.deleted[spec.references]
            note = f" ({spec.references} {got[name]} is deleted in Directus)" if gone else ""
            wrong.append(f"{what}: Directus {want[name]!r}, {where} {got[name]!r}{note}")
    return wrong


class Api:
    """The fleet's REST API. Each request goes to a worker chosen by the id's parity, not by
    ownership, so about half of them are routed to the key's owner."""

    def __init__(self, http: aiohttp.ClientSession, workers: list[MeshWorker]) -> None:
        self.http = http
        self.workers = workers
        self.limit = asyncio.Semaphore(16)
        self.readers: Counter[str] = Counter()
        """How many answers each worker read from its own tables (``X-Mesh-Worker``)."""

    async def get(self, entity_type: str, entity_id: int, suffix: str = "") -> tuple[int, Any]:
        worker = self.workers[entity_id % len(self.workers)]
        url = f"{worker.base}/api/v1/entities/{entity_type}/{entity_id}{suffix}"
        async with self.limit:
            try:
                async with self.http.get(url, headers=bearer()) as resp:
                    self.readers[resp.headers.get("X-Mesh-Worker", "?")] += 1
                    return resp.status, await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError) as exc:
                return 0, f"{type(exc).__name__} from {worker.name}"


async def rest_differences(api: Api, domain: DomainConfig, truth: Truth) -> list[str]:
    """Every way the REST API (and so the tables) differs from Directus."""

    async def entity(entity_type: str, entity_id: int) -> list[str]:
        what = f"{entity_type} {entity_id}"
        status, body = await api.get(entity_type, entity_id)
        if status != 200:
            return [f"{what}: REST answered {status}: {body}"]
        wrong = []
        if body["version"] not in truth.versions_for(domain, entity_type, entity_id):
            wrong.append(
                f"{what}: REST version {body['version']}, {truth.want(entity_type, entity_id)}"
            )
        item = truth.live[entity_type].get(entity_id)
        if item is None:
            if body["deleted"] is not True:
                wrong.append(f"{what}: deleted in Directus, REST deleted={body['deleted']}")
            return wrong
        if body["deleted"] is not False:
            wrong.append(f"{what}: live in Directus, REST deleted={body['deleted']}")
        extra = set(body["data"]) - set(domain.entities[entity_type].fields)
        if extra:
            wrong.append(f"{what}: REST data has fields the config lacks: {sorted(extra)}")
        return wrong + compare_fields(domain, truth, entity_type, entity_id, body["data"], "REST")

    async def relations(entity_type: str, entity_id: int) -> list[str]:
        what = f"{entity_type} {entity_id}"
        status, body = await api.get(entity_type, entity_id, "/relations")
        if status != 200:
            return [f"{what}/relations: REST answered {status}: {body}"]
        wrong = []
        for name, rel in body["reverse"].items():
            want = truth.children[(entity_type, entity_id, name)]
            got = {m["id"] for m in rel["members"]}
            if got != want or rel["count"] != len(want):
                gone = " (deleted in Directus)" if entity_id in truth.deleted[entity_type] else ""
                wrong.append(
                    f"{what}{gone}.{name}: Directus children {sorted(want, key=int)}, REST "
                    f"{sorted(got, key=int)} (count {rel['count']})"
                )
        item = truth.live[entity_type].get(entity_id)
        for name, spec in domain.entities[entity_type].fields.items():
            if spec.references is None:
                continue
            target = None if item is None or item[name] is None else str(item[name])
            ref = body["forward"].get(name)
            points_at = None if ref is None else ref["id"]
            if points_at != target:
                dead = points_at is not None and int(points_at) in truth.deleted[spec.references]
                note = f" ({spec.references} {points_at} is deleted in Directus)" if dead else ""
                wrong.append(f"{what} → {name}: Directus {target}, REST forward {ref}{note}")
        return wrong

    checks = [entity(t, i) for t, ids in truth_ids(truth) for i in ids]
    checks += [
        relations(t, i) for t, ids in truth_ids(truth) if has_relations(domain, t) for i in ids
    ]
    return [line for lines in await asyncio.gather(*checks) for line in lines]


def truth_ids(truth: Truth) -> list[tuple[str, list[int]]]:
    return [(t, sorted(truth.live[t].keys() | truth.deleted[t])) for t in ENTITY_TYPES]


def has_relations(domain: DomainConfig, entity_type: str) -> bool:
    entity = domain.entities[entity_type]
    return bool(entity.reverse_relations) or any(
        s.references is not None for s in entity.fields.values()
    )


def mirror_rows(dsn: str, table: str, ids: list[int]) -> dict[int, dict[str, Any]]:
    """The mirror's rows of ``ids`` in ``table`` (the entity type), by id."""
    conn = psycopg2.connect(dsn)
    # jsonb numbers as Decimal, not float: the mirror's data must keep decimals exact.
    psycopg2.extras.register_default_jsonb(conn, loads=lambda s: json.loads(s, parse_float=Decimal))
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SET TIME ZONE 'UTC'")
            query = sql.SQL("SELECT * FROM {} WHERE id = ANY(%s)").format(sql.Identifier(table))
            cur.execute(query, (ids,))
            return {int(row["id"]): dict(row) for row in cur.fetchall()}
    finally:
        conn.close()


async def mirror_differences(dsn: str, domain: DomainConfig, truth: Truth) -> list[str]:
    """Every way the Postgres mirror differs from Directus."""
    wrong: list[str] = []
    for entity_type, ids in truth_ids(truth):
        try:
            rows = await asyncio.to_thread(mirror_rows, dsn, entity_type, ids)
        except psycopg2.errors.UndefinedTable:
            wrong.append(f"Postgres: no table {entity_type!r} yet")
            continue
        for entity_id in ids:
            what = f"{entity_type} {entity_id}"
            row = rows.get(entity_id)
            if row is None:
                wrong.append(f"{what}: no row in Postgres table {entity_type!r}")
                continue
            if row["version"] not in truth.versions_for(domain, entity_type, entity_id):
                wrong.append(
                    f"{what}: Postgres version {row['version']}, "
                    f"{truth.want(entity_type, entity_id)}"
                )
            if row["urn"] != domain.urn("default", entity_type, str(entity_id)):
                wrong.append(f"{what}: Postgres urn {row['urn']!r}")
            item = truth.live[entity_type].get(entity_id)
            if item is None:
                if row["deleted"] is not True:
                    wrong.append(f"{what}: deleted in Directus, Postgres deleted={row['deleted']}")
                continue
            if row["deleted"] is not False:
                wrong.append(f"{what}: live in Directus, Postgres deleted={row['deleted']}")
            wrong += compare_fields(domain, truth, entity_type, entity_id, row, "Postgres column")
            data = row["data"] if isinstance(row["data"], dict) else {}
            wrong += compare_fields(domain, truth, entity_type, entity_id, data, "Postgres data")
    return wrong
