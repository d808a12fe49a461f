"""The GraphQL schema, built from the domain config with graphene.

One object type per entity type, named by its ``graphql_name``; its fields keep their
config names, camelCased by graphene (``unit_price`` → ``unitPrice``). Types: ``ID!`` for
``id`` (the id as in the URN), ``Int``/``BigInt``/``Float``/``Boolean``/``String`` for the
plain ones; decimals are ``String`` (exact, scale kept: ``"12.50"``) and timestamps are
``String`` in ISO 8601 with offset, exactly as the catalog stores them (a ``DateTime``
scalar would only re-parse and re-print them).

A forward relation (a field with ``references``) is the referenced object instead of its
id (``invoice.customer: Customer``); a reverse relation of the config is a list
(``customer.invoices: [Invoice!]!``). Every type has ``meta`` (URN, version, timestamps,
source, schema). Root fields: ``customer(id: ID!)`` and a paginated, filtered list
``customers(first:, after:, filter:)`` (:mod:`mesh.graphql.lists`) per entity type, and
the Apollo Federation fields ``_service`` and ``_entities`` (:mod:`mesh.graphql.federation`).

A deleted entity resolves to ``null``; through a root field it also adds the error
``no customer with id 9``. Every read goes through the request's
:class:`~mesh.graphql.loader.Loader` (``info.context``), so reads are batched per owner.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import graphene
from graphql import get_named_type
from graphql.execution.collect_fields import collect_sub_fields

from mesh.catalog.reader import parse_id
from mesh.domain import DomainConfig, EntitySpec, FieldSpec, FieldType
from mesh.errors import ApiError
from mesh.graphql.federation import federation_fields, subgraph_sdl
from mesh.graphql.limits import PublicGraphQLError
from mesh.graphql.lists import (
    DEFAULT_PAGE,
    MAX_PAGE,
    connection_type,
    filter_type,
    list_resolver,
    plural,
)
from mesh.graphql.loader import Loader
from mesh.graphql.reads import Key, live

Record = dict[str, Any]

_SCALARS: dict[FieldType, Any] = {
    FieldType.STRING: graphene.String,
    FieldType.INTEGER: graphene.Int,
    FieldType.LONG: graphene.BigInt,  # GraphQL's Int is 32-bit
    FieldType.FLOAT: graphene.Float,
    FieldType.BOOLEAN: graphene.Boolean,
    FieldType.DECIMAL: graphene.String,
    FieldType.TIMESTAMP: graphene.String,
}


def _first(found: list[Any]) -> Any:
    return found[0]


class EntitySource(graphene.ObjectType):  # type: ignore[misc]
    """Where the entity's last change came from."""

    system = graphene.String(required=True)
    instance = graphene.String(required=True)
    collection = graphene.String(required=True)
    position = graphene.BigInt(required=True, description="The source's change cursor.")
    timestamp = graphene.String(description="When the source made the change (ISO 8601).")

    @staticmethod
    def resolve_position(root: Record, info: Any) -> int:
        return int(root["position"])


class EntitySchema(graphene.ObjectType):  # type: ignore[misc]
    """The registered Avro schema the entity's last event was written with."""

    subject = graphene.String(required=True)
    id = graphene.Int(required=True)
    version = graphene.Int()


class EntityMeta(graphene.ObjectType):  # type: ignore[misc]
    """Catalog metadata of an entity."""

    urn = graphene.String(required=True)
    type = graphene.String(required=True)
    tenant = graphene.String(required=True)
    version = graphene.BigInt(required=True, description="The entity version (source position).")
    deleted = graphene.Boolean(required=True)
    first_seen = graphene.String()
    last_changed = graphene.String()
    op = graphene.String()
    event_id = graphene.String()
    source = graphene.Field(EntitySource, required=True)
    schema_ref = graphene.Field(EntitySchema, name="schema")

    @staticmethod
    def resolve_version(root: Record, info: Any) -> int:
        return int(root["version"])

    @staticmethod
    def resolve_schema_ref(root: Record, info: Any) -> Any:
        return root.get("schema")


def _state_resolver(name: str) -> Callable[[Record, Any], Any]:
    def resolve(root: Record, info: Any) -> Any:
        return root["state"].get(name)

    # The planned executor reads plain state fields itself (mesh.graphql.plan).
    resolve.state_field = name  # type: ignore[attr-defined]
    return resolve


def _id_resolver(root: Record, info: Any) -> Any:
    return root["id"]


def _withheld_resolver(name: str, scopes: list[str]) -> Callable[[Record, Any], Any]:
    """A field only callers with every one of ``scopes`` read; others get null and an
    error naming the scopes (the field is nullable, so its parent stays)."""
    plain = _state_resolver(name)
    needed = ", ".join(scopes)

    def resolve(root: Record, info: Any) -> Any:
        principal = info.context.principal
        if principal is None or not principal.has_scopes(scopes):
            raise PublicGraphQLError(f"reading '{info.field_name}' requires the scope {needed}")
        return plain(root, info)

    return resolve


def _live_first(found: list[Record | None]) -> Record | None:
    return live(found[0])


def _present(found: list[Record | None]) -> list[Record]:
    # A member whose record is gone or deleted (the index lags by one event) is left out.
    return [shown for rec in found if (shown := live(rec)) is not None]


class _Forward:
    """Resolves a forward relation: the live record, or a future of it while it is read
    (not a coroutine: graphql-core completes a plain value far cheaper)."""

    def __init__(self, name: str, target: str) -> None:
        self.name, self.target = name, target

    def key(self, root: Record) -> Key | None:
        ref = root["state"].get(self.name)
        return None if ref is None else Key("entity", self.target, str(ref))

    def __call__(self, root: Record, info: Any) -> Any:
        key = self.key(root)
        if key is None:
            return None
        loader: Loader = info.context
        return loader.fetch([key], _live_first)


class _Reverse:
    """Resolves a reverse relation: its live members, all awaited as one future.

    Before answering it reads ahead what the query selects of the members' own relations
    (forward references, reverse members): graphql-core would request exactly those keys
    in the very next round anyway, so the batches stay the same, but the members' resolvers
    then find their values and answer synchronously (no coroutine, task and gather per
    member). Errors of those keys stay with them, for the members' own fields.
    """

    def __init__(self, relation: str, child: str) -> None:
        self.relation, self.child = relation, child

    def key(self, root: Record) -> Key:
        return Key("relation", self.relation, root["id"])

    def __call__(self, root: Record, info: Any) -> Any:
        loader: Loader = info.context
        ids = loader.fetch([self.key(root)], _first)
        if isinstance(ids, asyncio.Future):
            return self._after_ids(loader, info, ids)
        return self._with_ids(loader, info, ids)

    def _with_ids(self, loader: Loader, info: Any, ids: list[str]) -> Any:
        found = loader.fetch([Key("entity", self.child, i) for i in ids], _present)
        if isinstance(found, asyncio.Future):
            return self._after_found(loader, info, found)
        return self._with_found(loader, info, found)

    def _with_found(self, loader: Loader, info: Any, found: list[Record]) -> Any:
        if not found:
            return found
        # graphql-core passes every member list of one selection the same field nodes,
        # alive for the whole request: worked out once per request, not once per parent.
        memo = ("ahead", id(info.field_nodes))
        plan = loader.memo.get(memo)
        if plan is None:
            plan = loader.memo[memo] = _plan(info)
        keys = [key for rec in found for resolve in plan if (key := resolve.key(rec))]
        ahead = loader.ready(keys)
        return found if ahead is None else _after(ahead, found)

    async def _after_ids(self, loader: Loader, info: Any, ids: asyncio.Future[Any]) -> Any:
        then = self._with_ids(loader, info, await ids)
        return (await then) if inspect.isawaitable(then) else then

    async def _after_found(self, loader: Loader, info: Any, found: asyncio.Future[Any]) -> Any:
        then = self._with_found(loader, info, await found)
        return (await then) if inspect.isawaitable(then) else then


async def _after(ahead: asyncio.Future[None], found: list[Record]) -> list[Record]:
    await ahead
    return found


def _plan(info: Any) -> list[_Forward | _Reverse]:
    # The relation fields the query selects of the members (fragments, aliases and
    # @skip/@include applied as graphql-core applies them): their keys are read ahead.
    child_type = get_named_type(info.return_type)
    selected = collect_sub_fields(
        info.schema, info.fragments, info.variable_values, child_type, info.field_nodes
    )
    resolvers: dict[int, _Forward | _Reverse] = {}
    for nodes in selected.values():
        field_def = child_type.fields.get(nodes[0].name.value)
        resolve = field_def.resolve if field_def is not None else None
        if isinstance(resolve, _Forward | _Reverse):
            resolvers[id(resolve)] = resolve
    return list(resolvers.values())


def _field(name: str, spec: FieldSpec, key: str, types: dict[str, Any]) -> Any:
    if name == key:
        return graphene.Field(
            graphene.ID, required=True, resolver=_id_resolver,
            description="The entity id, as in its URN.",
        )  # fmt: skip
    if spec.references is not None:
        target = spec.references
        return graphene.Field(
            lambda: types[target],
            resolver=_Forward(name, target),
            description=f"The {target} its {name} field refers to (null if none or deleted).",
        )
    if spec.requires_scopes:
        return graphene.Field(
            _SCALARS[spec.type],
            resolver=_withheld_resolver(name, spec.requires_scopes),
            description=f"Requires the scope {', '.join(spec.requires_scopes)}.",
        )
    return graphene.Field(
        _SCALARS[spec.type], required=not spec.nullable, resolver=_state_resolver(name)
    )


def _object_type(
    domain: DomainConfig, entity_type: str, spec: EntitySpec, types: dict[str, Any]
) -> Any:
    attrs: dict[str, Any] = {
        "Meta": type("Meta", (), {"name": spec.graphql_name,
                                  "description": f"One {entity_type} entity of the catalog."}),
        "meta": graphene.Field(
            EntityMeta, required=True, resolver=lambda root, info: root,
            description="Catalog metadata: URN, version, source, schema.",
        ),
    }  # fmt: skip
    for name, field_spec in spec.fields.items():
        attrs[name] = _field(name, field_spec, spec.key, types)
    for name, rel in spec.reverse_relations.items():
        child = rel.entity
        attrs[name] = graphene.Field(
            graphene.NonNull(graphene.List(graphene.NonNull(lambda child=child: types[child]))),
            resolver=_Reverse(f"{entity_type}.{name}", child),
            description=f"The {child} entities whose {rel.field} is this {entity_type}.",
        )
    return type(spec.graphql_name, (graphene.ObjectType,), attrs)


class _Root:
    """Resolves a root field by id (``customer(id:)``): the live record, or ``null`` and the
    error ``no customer with id 9``. Its steps are methods too, so that the planned
    executor (:mod:`mesh.graphql.plan`) reads the key with its round's other keys."""

    def __init__(self, entity_type: str, spec: EntitySpec) -> None:
        self.entity_type, self.spec = entity_type, spec

    def key(self, id: str) -> Key:
        """The key of ``id``; :class:`PublicGraphQLError` when it cannot be one."""
        try:
            entity_id = parse_id(self.spec, self.entity_type, id)
        except ApiError as exc:
            raise PublicGraphQLError(exc.message) from None
        return Key("entity", self.entity_type, entity_id)

    def found(self, key: Key, record: Record | None) -> Record:
        """The record read for ``key`` (live or ``None``), or the error naming the id."""
        if record is None:
            raise PublicGraphQLError(f"no {self.entity_type} with id {key.id}")
        return record

    async def __call__(self, root: Any, info: Any, id: str) -> Record | None:
        key = self.key(id)
        loader: Loader = info.context
        found = loader.fetch([key], _live_first)
        rec = (await found) if isinstance(found, asyncio.Future) else found
        return self.found(key, rec)


def build_schema(domain: DomainConfig, sagas: Any = None) -> graphene.Schema:
    """The GraphQL schema of ``domain`` (resolvers read through ``info.context``), with the
    saga mutation and queries over ``sagas`` (:mod:`mesh.graphql.sagas`) when given."""
    types: dict[str, Any] = {}
    for entity_type, spec in domain.entities.items():
        types[entity_type] = _object_type(domain, entity_type, spec, types)
    query_attrs: dict[str, Any] = {}
    for entity_type, spec in domain.entities.items():
        query_attrs[entity_type] = graphene.Field(
            types[entity_type],
            id=graphene.ID(required=True),
            resolver=_Root(entity_type, spec),
            description=f"One {entity_type} by id; null (with an error) when there is none.",
        )
        list_name = plural(entity_type)
        if list_name in domain.entities:
            continue  # an entity type already named like the plural: no list for this one
        query_attrs[list_name] = graphene.Field(
            graphene.NonNull(connection_type(spec, lambda t=entity_type: types[t])),
            first=graphene.Int(default_value=DEFAULT_PAGE, description=f"At most {MAX_PAGE}."),
            after=graphene.String(description="The `endCursor` of the previous page."),
            filter=graphene.Argument(filter_type(spec)),
            resolver=list_resolver(entity_type),
            description=f"The live {entity_type} entities of the whole fleet, in id order.",
        )
    sdl = subgraph_sdl(domain, query_attrs, types)  # Apollo Federation v2 subgraph
    query_attrs.update(federation_fields(domain, types, sdl))
    mutation = None
    if sagas is not None:
        from mesh.graphql.sagas import saga_fields

        saga_queries, mutation = saga_fields(sagas)
        query_attrs.update(saga_queries)
    query = type("Query", (graphene.ObjectType,), query_attrs)
    return graphene.Schema(query=query, mutation=mutation, types=list(types.values()))
