"""The domain's Directus collections: their fields, relations and the order to fill them.

Idempotent: an existing collection only gets its missing fields (and a unique index on a
field the config now declares ``unique``), and only missing relations are created.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mesh.domain import DomainConfig, EntitySpec, FieldSpec, FieldType
from mesh.errors import StackError
from mesh_tooling.dev.directus.client import DirectusClient

__all__ = ["AUTO_TIMESTAMPS", "creation_order", "directus_entities", "ensure_schema"]

_DIRECTUS_TYPES: Mapping[FieldType, str] = {
    FieldType.STRING: "string",
    FieldType.INTEGER: "integer",
    FieldType.LONG: "bigInteger",
    FieldType.FLOAT: "float",
    FieldType.BOOLEAN: "boolean",
    FieldType.DECIMAL: "decimal",
    FieldType.TIMESTAMP: "timestamp",
}
AUTO_TIMESTAMPS = {"date_created": "date-created", "date_updated": "date-updated"}


def directus_entities(domain: DomainConfig, source: str | None) -> dict[str, EntitySpec]:
    """Entity types held by Directus sources (or by the one named ``source``)."""
    return {
        name: entity
        for name, entity in domain.entities.items()
        if (source is None or source in entity.sources)
        and domain.source(entity.sources[0]).kind == "directus"
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
    if spec.unique:
        # A unique index: a duplicate write answers 400 RECORD_NOT_UNIQUE.
        schema["is_unique"] = True
    meta: dict[str, Any] = {"required": not spec.nullable}
    if spec.type is FieldType.DECIMAL:
        schema["numeric_precision"] = spec.precision
        schema["numeric_scale"] = spec.scale
    if spec.type is FieldType.TIMESTAMP and name in AUTO_TIMESTAMPS:
        # Directus fills these itself (the flag, not a DB default, drives it).
        meta.update(
            special=[AUTO_TIMESTAMPS[name], "cast-timestamp"],
            interface="datetime",
            readonly=True,
            hidden=True,
            required=False,
        )
    elif spec.references is not None:
        meta.update(special=["m2o"], interface="select-dropdown-m2o", display="related-values")
    return {"field": name, "type": _DIRECTUS_TYPES[spec.type], "schema": schema, "meta": meta}


def creation_order(entities: Mapping[str, EntitySpec]) -> list[str]:
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


async def ensure_schema(
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
        have = {f["field"]: f for f in await api.request("GET", f"/fields/{entity.collection}")}
        for payload in payloads:
            name = payload["field"]
            current = have.get(name)
            if current is None:
                progress(f"adding field {entity.collection}.{name}")
                await api.request("POST", f"/fields/{entity.collection}", payload)
                changed = True
            elif payload["schema"].get("is_unique") and not (current.get("schema") or {}).get(
                "is_unique"
            ):
                # Fails (400) while rows hold duplicates: those are for people to resolve.
                progress(f"making field {entity.collection}.{name} unique")
                await api.request(
                    "PATCH", f"/fields/{entity.collection}/{name}", {"schema": {"is_unique": True}}
                )
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
