"""Create the sample domain in a running Directus through its REST API.

From the domain config it creates, for every entity type whose source is a Directus source:
the collection (integer auto-increment ``id``), its fields with matching Directus types, a
many-to-one relation for every ``references:`` field, a read-only role and service user
for the adapters (with the static token the caller passes), and deterministic sample rows.

Everything is idempotent: what exists is left alone (missing fields, relations and
permissions are added), and a collection that already holds rows gets no new ones, so a
second run on a seeded Directus writes nothing and takes ~0.7 s (0.5 s of it is the login
stall Directus adds against timing attacks).

Usage::

    token = load_or_create_token(state_dir)        # the dev stack persists it
    result = await seed_directus(directus.url, admin_email, admin_password, domain,
                                 service_token=token, progress=print)
"""

from __future__ import annotations

import os
import random
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from mesh.domain import DomainConfig, EntitySpec, FieldSpec, FieldType
from mesh.errors import StackError

__all__ = [
    "DEFAULT_ROWS",
    "SERVICE_EMAIL",
    "SERVICE_ROLE",
    "SYSTEM_READ_COLLECTIONS",
    "DirectusClient",
    "SeedResult",
    "generate_service_token",
    "load_or_create_token",
    "seed_directus",
]

DEFAULT_ROWS: Mapping[str, int] = {
    "customer": 50,
    "product": 40,
    "invoice": 120,
    "invoice_item": 400,
}
"""Sample rows per entity type; types not listed get :data:`_ROWS_FALLBACK`."""
_ROWS_FALLBACK = 50

SERVICE_ROLE = "DictaMesh adapter"
SERVICE_EMAIL = "mesh-adapter@example.com"
"""The adapters' service user (example.com: Directus rejects reserved TLDs like .local)."""

SYSTEM_READ_COLLECTIONS = (
    "directus_activity",  # the change feed the adapters poll
    "directus_revisions",  # the item data behind each activity row
    "directus_collections",  # schema, so an adapter can check the config against Directus
    "directus_fields",
    "directus_relations",
)
"""System collections the service role may read besides the domain collections."""

_BATCH = 500  # rows per POST /items: measured ~265 items/s either way; 500 keeps bodies small
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # fixed, so sample data is the same on every run

_DIRECTUS_TYPES: Mapping[FieldType, str] = {
    FieldType.STRING: "string",
    FieldType.INTEGER: "integer",
    FieldType.LONG: "bigInteger",
    FieldType.FLOAT: "float",
    FieldType.BOOLEAN: "boolean",
    FieldType.DECIMAL: "decimal",
    FieldType.TIMESTAMP: "timestamp",
}
_AUTO_TIMESTAMPS = {"date_created": "date-created", "date_updated": "date-updated"}


def generate_service_token() -> str:
    """A new random static token for the service user."""
    return secrets.token_urlsafe(32)


def load_or_create_token(state_dir: Path, name: str = "directus-service-token") -> str:
    """The service token saved in ``state_dir``, generated (mode 0600) on first use."""
    path = state_dir / name
    try:
        token = path.read_text("utf-8").strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    state_dir.mkdir(parents=True, exist_ok=True)
    token = generate_service_token()
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    tmp.replace(path)
    return token


@dataclass(frozen=True)
class SeedResult:
    """What :func:`seed_directus` left in Directus."""

    service_email: str
    service_token: str = field(repr=False)
    counts: Mapping[str, int]
    """Rows per collection after seeding, e.g. ``{"customers": 50, ...}``."""
    created: Mapping[str, int]
    """Rows inserted by this run per collection (all zero on a second run)."""
    changed_schema: bool
    """True when this run created a collection, field, relation, role or permission."""
    seconds: float


# --------------------------------------------------------------------------------- HTTP


class DirectusClient:
    """A minimal Directus REST client: JSON in, ``data`` out, errors as :class:`StackError`."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, token: str | None = None):
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.token = token

    @classmethod
    async def login(
        cls, http: aiohttp.ClientSession, base_url: str, email: str, password: str
    ) -> DirectusClient:
        """Log in with ``POST /auth/login`` and return a client using the access token."""
        client = cls(http, base_url)
        try:
            data = await client.request(
                "POST", "/auth/login", {"email": email, "password": password}
            )
        except StackError as exc:
            raise StackError(
                f"cannot log in to Directus at {base_url} as {email}: {exc}. The admin user is "
                "created only when a database is bootstrapped the first time: use the "
                "credentials it was bootstrapped with, or start from a fresh database."
            ) from None
        client.token = str(data["access_token"])
        return client

    async def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """Call the API and return the response's ``data`` (None for 204)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        url = self.base_url + path
        try:
            async with self.http.request(
                method, url, json=json, params=params, headers=headers
            ) as resp:
                if resp.status == 204:
                    return None
                body: Any = await resp.json(content_type=None)
                if resp.status >= 400:
                    raise StackError(
                        f"Directus {method} {path} failed ({resp.status}): {_error_text(body)}",
                        retriable=resp.status >= 500 or resp.status == 429,
                    )
        except aiohttp.ClientError as exc:
            raise StackError(
                f"Directus {method} {path} failed: {exc}; is Directus running at {self.base_url}?",
                retriable=True,
            ) from None
        except ValueError:
            raise StackError(f"Directus {method} {path} did not answer JSON") from None
        return body.get("data") if isinstance(body, dict) else body


def _error_text(body: Any) -> str:
    errors = body.get("errors") if isinstance(body, dict) else None
    if not errors:
        return str(body)[:500]
    return "; ".join(
        f"{e.get('message')} [{e.get('extensions', {}).get('code', '?')}]" for e in errors
    )


# --------------------------------------------------------------------------------- schema


def _directus_entities(domain: DomainConfig, source: str | None) -> dict[str, EntitySpec]:
    """Entity types held by Directus sources (or by the one named ``source``)."""
    return {
        name: entity
        for name, entity in domain.entities.items()
        if (source is None or entity.source == source)
        and domain.source(entity.source).kind == "directus"
    }


def _field_payload(name: str, spec: FieldSpec, *, key: bool) -> dict[str, Any]:
    """The ``POST /fields`` body for one field of the config."""
    if key:
        if spec.type not in (FieldType.INTEGER, FieldType.LONG):
            raise StackError(
                f"the seed supports integer or long keys only, not {spec.type.value} ('{name}')"
            )
        return {
            "field": name,
            "type": _DIRECTUS_TYPES[spec.type],
            "schema": {"is_primary_key": True, "has_auto_increment": True},
            "meta": {"hidden": True, "readonly": True, "interface": "input"},
        }
    schema: dict[str, Any] = {"is_nullable": spec.nullable}
    meta: dict[str, Any] = {"required": not spec.nullable}
    if spec.type is FieldType.DECIMAL:
        schema["numeric_precision"] = spec.precision
        schema["numeric_scale"] = spec.scale
    if spec.type is FieldType.TIMESTAMP and name in _AUTO_TIMESTAMPS:
        # Directus fills these itself (the flag, not a DB default, drives it).
        meta.update(
            special=[_AUTO_TIMESTAMPS[name], "cast-timestamp"],
            interface="datetime",
            readonly=True,
            hidden=True,
            required=False,
        )
    elif spec.references is not None:
        meta.update(special=["m2o"], interface="select-dropdown-m2o", display="related-values")
    return {"field": name, "type": _DIRECTUS_TYPES[spec.type], "schema": schema, "meta": meta}


def _creation_order(entities: Mapping[str, EntitySpec]) -> list[str]:
    """Entity types with referenced ones first, so foreign keys can be filled."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise StackError(f"the seed cannot order entity types with a reference cycle at {name}")
        visiting.add(name)
        for spec in entities[name].fields.values():
            ref = spec.references
            if ref is not None and ref in entities and ref != name:
                visit(ref)
        visiting.discard(name)
        order.append(name)

    for name in entities:
        visit(name)
    return order


async def _ensure_schema(
    api: DirectusClient,
    domain: DomainConfig,
    entities: Mapping[str, EntitySpec],
    progress: Callable[[str], None],
) -> bool:
    changed = False
    existing = {c["collection"] for c in await api.request("GET", "/collections")}
    for name, entity in entities.items():
        payloads = [
            _field_payload(f, spec, key=f == entity.key) for f, spec in entity.fields.items()
        ]
        if entity.collection not in existing:
            progress(f"creating Directus collection {entity.collection}")
            await api.request(
                "POST",
                "/collections",
                {
                    "collection": entity.collection,
                    # Activity + revisions for every change: the adapters' change feed.
                    "meta": {"accountability": "all", "note": f"DictaMesh entity type {name}"},
                    "schema": {},
                    "fields": payloads,
                },
            )
            changed = True
            continue
        have = {f["field"] for f in await api.request("GET", f"/fields/{entity.collection}")}
        for payload in payloads:
            if payload["field"] not in have:
                progress(f"adding field {entity.collection}.{payload['field']}")
                await api.request("POST", f"/fields/{entity.collection}", payload)
                changed = True
    relations = await api.request("GET", "/relations")
    have_rel = {(r["collection"], r["field"]) for r in relations}
    for entity in entities.values():
        for f, spec in entity.fields.items():
            if spec.references is None or (entity.collection, f) in have_rel:
                continue
            target = domain.entities[spec.references].collection
            progress(f"creating relation {entity.collection}.{f} → {target}")
            # Many-to-one only: an O2M alias on the other side would add id arrays to every
            # `fields=*` read of the referenced collection, which the adapters read.
            await api.request(
                "POST",
                "/relations",
                {
                    "collection": entity.collection,
                    "field": f,
                    "related_collection": target,
                    "schema": {"on_delete": "SET NULL"},
                    "meta": {"one_deselect_action": "nullify"},
                },
            )
            changed = True
    return changed


def _wanted_permissions(role_id: str, collections: Sequence[str]) -> list[dict[str, Any]]:
    """Read access on the domain collections and the system collections the adapters use;
    activity and revisions only for the domain collections (not logins, users, settings)."""
    wanted = [
        {"role": role_id, "collection": c, "action": "read", "fields": ["*"], "permissions": {}}
        for c in (*collections, *SYSTEM_READ_COLLECTIONS)
    ]
    for perm in wanted:
        if perm["collection"] in ("directus_activity", "directus_revisions"):
            perm["permissions"] = {"collection": {"_in": list(collections)}}
    return wanted


async def _token_works(api: DirectusClient, token: str, user_id: str) -> bool:
    probe = DirectusClient(api.http, api.base_url, token)
    try:
        me = await probe.request("GET", "/users/me", params={"fields": "id"})
    except StackError:
        return False
    return isinstance(me, dict) and me.get("id") == user_id


async def _ensure_service_user(
    api: DirectusClient,
    collections: Sequence[str],
    email: str,
    token: str,
    progress: Callable[[str], None],
) -> bool:
    changed = False
    roles = await api.request(
        "GET", "/roles", params={"filter[name][_eq]": SERVICE_ROLE, "fields": "id"}
    )
    if roles:
        role_id = str(roles[0]["id"])
    else:
        progress(f"creating Directus role {SERVICE_ROLE!r} and user {email}")
        # Directus 10 grants access per role: no admin, no app (UI) access, API reads only.
        role = await api.request(
            "POST",
            "/roles",
            {
                "name": SERVICE_ROLE,
                "icon": "sync_alt",
                "description": "Read-only API access for the DictaMesh adapters",
                "admin_access": False,
                "app_access": False,
            },
        )
        role_id = str(role["id"])
        changed = True
    have = {
        (p["collection"], p["action"]): p
        for p in await api.request(
            "GET",
            "/permissions",
            params={
                "filter[role][_eq]": role_id,
                "fields": "id,collection,action,permissions",
                "limit": "-1",
            },
        )
    }
    missing = []
    for perm in _wanted_permissions(role_id, collections):
        current = have.get((perm["collection"], perm["action"]))
        if current is None:
            missing.append(perm)
        elif (current["permissions"] or {}) != perm["permissions"]:
            # e.g. an entity type was added to the config: widen the activity filter.
            await api.request(
                "PATCH", f"/permissions/{current['id']}", {"permissions": perm["permissions"]}
            )
            changed = True
    if missing:
        await api.request("POST", "/permissions", missing)
        changed = True
    users = await api.request(
        "GET", "/users", params={"filter[email][_eq]": email, "fields": "id,role"}
    )
    if not users:
        await api.request(
            "POST",
            "/users",
            {
                "email": email,
                "first_name": "DictaMesh",
                "last_name": "adapter",
                "role": role_id,
                "token": token,
                "status": "active",
            },
        )
        return True
    user = users[0]
    # Directus never returns a static token (only "**********"), so try it instead; set it
    # only when it does not work (e.g. the stack's state dir was reset), because every
    # PATCH of a user adds an activity row and a revision.
    if user["role"] != role_id or not await _token_works(api, token, str(user["id"])):
        progress(f"setting the static token of {email}")
        await api.request("PATCH", f"/users/{user['id']}", {"token": token, "role": role_id})
        changed = True
    return changed


# --------------------------------------------------------------------------------- rows


_STATUSES: Mapping[str, Sequence[str]] = {
    "customer": ("active", "active", "active", "prospect", "inactive"),
    "invoice": ("draft", "issued", "issued", "paid", "paid", "paid", "void"),
    "product": ("active", "active", "discontinued"),
}
_FIRST = ("Ada", "Alan", "Grace", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Tim")
_LAST = ("Lovelace", "Turing", "Hopper", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson")
_ADJ = ("Compact", "Rugged", "Smart", "Quiet", "Modular", "Wireless", "Ergonomic", "Solar")
_NOUN = ("Router", "Sensor", "Keyboard", "Monitor", "Bracket", "Cable", "Battery", "Hub")


def _sample_value(
    entity_type: str,
    entity: EntitySpec,
    name: str,
    spec: FieldSpec,
    index: int,
    row: Mapping[str, Any],
    rng: random.Random,
) -> Any:
    """A plausible value for one field; names of the sample domain get realistic values,
    anything else a generic one of the right type."""
    t = spec.type
    if t is FieldType.STRING:
        if name == "name" and "email" in entity.fields:
            return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        if name == "name":
            return f"{rng.choice(_ADJ)} {rng.choice(_NOUN)} {index + 1}"
        if name == "email":
            base = str(row.get("name", entity_type)).lower().replace(" ", ".")
            return f"{base}.{index + 1}@example.com"
        if name == "status":
            return rng.choice(_STATUSES.get(entity_type, ("active", "inactive")))
        if name == "sku":
            return f"SKU-{index + 1:05d}"
        if name == "number":
            return f"INV-2026-{index + 1:05d}"
        return f"{name}-{index + 1}"
    if t is FieldType.INTEGER:
        if name == "quantity":
            return rng.randint(1, 10)
        return rng.randint(0, 500)
    if t is FieldType.LONG:
        return rng.randrange(10**12)
    if t is FieldType.FLOAT:
        return round(rng.uniform(0, 1000), 3)
    if t is FieldType.BOOLEAN:
        return rng.random() < 0.5
    if t is FieldType.DECIMAL:
        assert spec.precision is not None
        assert spec.scale is not None
        top = 5000 if name == "total" else 500
        top = min(top, 10 ** (spec.precision - spec.scale) - 1)
        cents = rng.randint(100, top * 100)
        # A string keeps the exact decimal; Directus returns decimals as strings too.
        return str(Decimal(cents).scaleb(-2).quantize(Decimal(1).scaleb(-spec.scale)))
    # TIMESTAMP
    moment = _EPOCH - timedelta(seconds=rng.randrange(365 * 24 * 3600))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _count(api: DirectusClient, collection: str) -> int:
    data = await api.request("GET", f"/items/{collection}", params={"aggregate[count]": "*"})
    return int(data[0]["count"]) if data else 0


async def _ids(api: DirectusClient, collection: str, key: str) -> list[Any]:
    rows = await api.request(
        "GET", f"/items/{collection}", params={"fields": key, "limit": "-1", "sort": key}
    )
    return [r[key] for r in rows]


async def _seed_rows(
    api: DirectusClient,
    entities: Mapping[str, EntitySpec],
    rows: Mapping[str, int],
    seed: int,
    progress: Callable[[str], None],
) -> tuple[dict[str, int], dict[str, int]]:
    counts: dict[str, int] = {}
    created: dict[str, int] = {}
    ids: dict[str, list[Any]] = {}
    for name in _creation_order(entities):
        entity = entities[name]
        existing = await _count(api, entity.collection)
        target = rows.get(name, _ROWS_FALLBACK)
        created[entity.collection] = 0
        # Only an empty collection is seeded: rows someone added or deleted while using
        # the stack are theirs, and a re-run must not reintroduce or duplicate them.
        if existing or target <= 0:
            counts[entity.collection] = existing
            continue
        rng = random.Random(f"{seed}:{name}")  # per type: same rows whatever else changes
        refs = {
            f: s.references
            for f, s in entity.fields.items()
            if s.references is not None and s.references in entities
        }
        for ref_type in set(refs.values()):
            if ref_type not in ids:
                ref_entity = entities[ref_type]
                ids[ref_type] = await _ids(api, ref_entity.collection, ref_entity.key)
        batch_rows: list[dict[str, Any]] = []
        for i in range(target):
            row: dict[str, Any] = {}
            for f, spec in entity.fields.items():
                if f == entity.key or (spec.type is FieldType.TIMESTAMP and f in _AUTO_TIMESTAMPS):
                    continue
                target_type = refs.get(f)
                if target_type is not None:
                    pool = ids[target_type]
                    row[f] = rng.choice(pool) if pool else None
                else:
                    row[f] = _sample_value(name, entity, f, spec, i, row, rng)
            batch_rows.append(row)
        progress(f"adding {target} sample rows to {entity.collection}")
        new_ids: list[Any] = []
        for start in range(0, len(batch_rows), _BATCH):
            chunk = batch_rows[start : start + _BATCH]
            out = await api.request(
                "POST", f"/items/{entity.collection}", chunk, params={"fields": entity.key}
            )
            new_ids.extend(r[entity.key] for r in out)
        ids[name] = new_ids
        created[entity.collection] = len(new_ids)
        counts[entity.collection] = len(new_ids)
    return counts, created


# --------------------------------------------------------------------------------- entry


async def seed_directus(
    base_url: str,
    admin_email: str,
    admin_password: str,
    domain: DomainConfig,
    *,
    service_token: str,
    service_email: str = SERVICE_EMAIL,
    rows: Mapping[str, int] | bool = True,
    source: str | None = None,
    seed: int = 2026,
    progress: Callable[[str], None] = lambda _line: None,
) -> SeedResult:
    """Create the domain's collections, fields, relations, the adapters' service user (with
    ``service_token`` as its static token) and sample rows in the Directus at ``base_url``.

    ``rows`` gives sample rows per entity type (``True``: :data:`DEFAULT_ROWS`, ``False``: no
    rows, only schema and user); ``source`` limits seeding to entity types of
    that source (default: every entity type whose source kind is ``directus``). Idempotent;
    raises :class:`StackError` with Directus' message when a call fails.
    """
    started = time.monotonic()
    if len(service_token) < 16:
        raise StackError("the Directus service token must be at least 16 characters long")
    entities = _directus_entities(domain, source)
    if not entities:
        raise StackError(
            f"the domain config has no entity types in a Directus source"
            f"{f' named {source!r}' if source else ''}: nothing to seed"
        )
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        api = await DirectusClient.login(http, base_url, admin_email, admin_password)
        changed = await _ensure_schema(api, domain, entities, progress)
        collections = [e.collection for e in entities.values()]
        changed |= await _ensure_service_user(
            api, collections, service_email, service_token, progress
        )
        per_type: Mapping[str, int] = (
            (DEFAULT_ROWS if rows else dict.fromkeys(entities, 0))
            if isinstance(rows, bool)
            else rows
        )
        counts, created = await _seed_rows(api, entities, per_type, seed, progress)
    took = time.monotonic() - started
    if changed or any(created.values()):
        total = sum(created.values())
        progress(f"Directus seeded in {took:.1f} s ({total} sample rows)")
    return SeedResult(
        service_email=service_email,
        service_token=service_token,
        counts=counts,
        created=created,
        changed_schema=changed,
        seconds=took,
    )
