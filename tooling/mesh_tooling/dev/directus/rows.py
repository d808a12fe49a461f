"""Deterministic sample rows for the domain's Directus collections.

Rows depend only on the seed and the entity type, so every run makes the same data; only
an empty collection is filled, and references point at rows already created.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from mesh.domain import EntitySpec, FieldSpec, FieldType
from mesh_tooling.dev.directus.client import DirectusClient
from mesh_tooling.dev.directus.schema import AUTO_TIMESTAMPS, creation_order

__all__ = ["DEFAULT_ROWS", "seed_rows"]

DEFAULT_ROWS: Mapping[str, int] = {
    "customer": 50,
    "product": 40,
    "invoice": 120,
    "invoice_item": 400,
    "reservation": 0,  # only sagas hold stock
}
"""Sample rows per entity type; types not listed get :data:`_ROWS_FALLBACK`."""
_ROWS_FALLBACK = 50

_BATCH = 500  # rows per POST /items: measured ~265 items/s either way; 500 keeps bodies small
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)  # fixed, so sample data is the same on every run


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
    if name == "saga_key" and spec.nullable:
        return None  # sample rows are nobody's saga
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
        if name == "stock":
            return max(0, rng.randint(-20, 240))  # units on hand; about 1 in 13 sold out
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


async def seed_rows(
    api: DirectusClient,
    entities: Mapping[str, EntitySpec],
    rows: Mapping[str, int],
    seed: int,
    progress: Callable[[str], None],
) -> tuple[dict[str, int], dict[str, int]]:
    counts: dict[str, int] = {}
    created: dict[str, int] = {}
    ids: dict[str, list[Any]] = {}
    for name in creation_order(entities):
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
                if f == entity.key or (spec.type is FieldType.TIMESTAMP and f in AUTO_TIMESTAMPS):
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
