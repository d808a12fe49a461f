"""Apollo Federation v2 subgraph support: ``_service``, ``_entities``, ``@key``.

Every entity type is an entity of the federated graph, keyed by its id field
(``@key(fields: "id")``). :func:`federation_fields` adds the two root fields the gateway
(Apollo Router, Hive Gateway) needs:

- ``_service { sdl }``: the subgraph SDL, printed by :func:`subgraph_sdl` — the
  ``extend schema @link(url: …/federation/v2.3, import: ["@key"])`` header, then the schema
  with ``@key`` on each entity type and without the federation plumbing (``_service``,
  ``_entities``, ``_Any``, ``_Entity``, ``_Service``), as the federation spec asks;
- ``_entities(representations: [_Any!]!): [_Entity]!``: the entities named by
  representations such as ``{"__typename": "Customer", "id": "1"}``, in the order given,
  ``null`` for an unknown or deleted id. They are read through the request's
  :class:`~mesh.graphql.loader.Loader` like every other read, all in the same batch (one
  per owning worker). A representation with an unknown ``__typename`` or without its key
  fails the field with an error naming it.

graphene and graphql-core cannot attach directives to types, so the SDL is printed from
the executable schema (federation fields filtered out) and the ``@key`` directives are
written in by name.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from typing import Any

import graphene
from graphene.utils.str_converters import to_camel_case
from graphql import (
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    ValueNode,
    print_schema,
    value_from_ast_untyped,
)

from mesh.catalog.reader import parse_id
from mesh.domain import DomainConfig, EntitySpec
from mesh.errors import ApiError
from mesh.graphql.limits import PublicGraphQLError
from mesh.graphql.loader import Loader
from mesh.graphql.reads import Key, live

Record = dict[str, Any]

FEDERATION_VERSION = "v2.5"  # @requiresScopes came with 2.5
FEDERATION_URL = f"https://specs.apollo.dev/federation/{FEDERATION_VERSION}"
SDL_HEADER = f'extend schema @link(url: "{FEDERATION_URL}", import: ["@key", "@requiresScopes"])'
FEDERATION_FIELDS = frozenset({"_service", "_entities"})
MAX_REPRESENTATIONS = 1000
"""Representations one ``_entities`` call may carry (each one is a read)."""


def _any_literal(node: ValueNode, _variables: dict[str, Any] | None = None) -> Any:
    return value_from_ast_untyped(node, _variables)


class AnyScalar(graphene.Scalar):  # type: ignore[misc]
    """A representation of an entity: its ``__typename`` and key fields."""

    class Meta:
        name = "_Any"

    @staticmethod
    def serialize(value: Any) -> Any:
        return value

    @staticmethod
    def parse_value(value: Any) -> Any:
        return value

    parse_literal = staticmethod(_any_literal)


class ServiceType(graphene.ObjectType):  # type: ignore[misc]
    """The subgraph's SDL, for the gateway's composition."""

    class Meta:
        name = "_Service"

    sdl = graphene.String(required=True)


def key_field(spec: EntitySpec) -> str:
    """The GraphQL name of the entity's key field (``id``), as in its ``@key``."""
    name: str = to_camel_case(spec.key)
    return name


def subgraph_sdl(schema: GraphQLSchema, domain: DomainConfig) -> str:
    """The subgraph SDL of ``schema``: ``@link`` header, ``@key`` on the entity types."""
    query = schema.query_type
    assert query is not None
    kept = {name: f for name, f in query.fields.items() if name not in FEDERATION_FIELDS}
    plain_query = GraphQLObjectType(query.name, kept, description=query.description)
    # Everything still reachable from the root fields, and the entity types themselves.
    types: list[GraphQLNamedType] = []
    for spec in domain.entities.values():
        found = schema.get_type(spec.graphql_name)
        assert found is not None, spec.graphql_name
        types.append(found)
    printed = print_schema(GraphQLSchema(query=plain_query, types=types))
    for spec in domain.entities.values():
        key = f' @key(fields: "{key_field(spec)}")'
        pattern = re.compile(rf"^(type {re.escape(spec.graphql_name)})(?=[ {{])", re.MULTILINE)
        printed, count = pattern.subn(rf"\g<1>{key}", printed, count=1)  # names: [_A-Za-z0-9]
        assert count == 1, spec.graphql_name
        printed = _with_scope_policies(printed, spec)
    return f"{SDL_HEADER}\n\n{printed}\n"


def _with_scope_policies(printed: str, spec: EntitySpec) -> str:
    """``@requiresScopes`` on the fields of ``spec``'s type that have a scope policy, so a
    federation router enforces what this subgraph does."""
    start = printed.index(f"type {spec.graphql_name} ")
    end = printed.index("\n}", start)
    block = printed[start:end]
    for name, field in spec.fields.items():
        if not field.requires_scopes:
            continue
        scopes = ", ".join(f'"{s}"' for s in field.requires_scopes)
        line = re.compile(rf"^(  {re.escape(to_camel_case(name))}: [^\n]*)$", re.MULTILINE)
        block, count = line.subn(rf"\g<1> @requiresScopes(scopes: [[{scopes}]])", block, count=1)
        assert count == 1, (spec.graphql_name, name)
    return printed[:start] + block + printed[end:]


def _live_all(found: list[Record | None]) -> list[Record | None]:
    return [live(rec) for rec in found]


def _entities_resolver(
    domain: DomainConfig,
) -> Callable[..., Awaitable[list[Record | None]]]:
    by_name = {spec.graphql_name: (t, spec) for t, spec in domain.entities.items()}

    def key_of(position: int, rep: Any) -> tuple[str, str]:
        where = f"representation {position}"
        if not isinstance(rep, dict):
            raise PublicGraphQLError(f"{where} is not an object")
        typename = rep.get("__typename")
        if not isinstance(typename, str):
            raise PublicGraphQLError(f"{where} has no __typename")
        if typename not in by_name:
            raise PublicGraphQLError(f"{where}: {typename!r} is not an entity type")
        entity_type, spec = by_name[typename]
        field = key_field(spec)
        raw = rep.get(field)
        if raw is None or isinstance(raw, bool) or not isinstance(raw, str | int):
            raise PublicGraphQLError(f"{where} ({typename}) has no {field!r} string")
        try:
            return entity_type, parse_id(spec, entity_type, str(raw))
        except ApiError as exc:
            raise PublicGraphQLError(f"{where}: {exc.message}") from None

    async def resolve(root: Any, info: Any, representations: list[Any]) -> list[Record | None]:
        if len(representations) > MAX_REPRESENTATIONS:
            why = f"at most {MAX_REPRESENTATIONS} representations per _entities call"
            raise PublicGraphQLError(why)
        keys = [key_of(n, rep) for n, rep in enumerate(representations)]
        loader: Loader = info.context
        # Requested together (one future for all), so they are read in one batch per owner.
        found = loader.fetch([Key("entity", t, i) for t, i in keys], _live_all)
        return (await found) if isinstance(found, asyncio.Future) else found

    return resolve


def federation_fields(domain: DomainConfig, types: dict[str, Any]) -> dict[str, Any]:
    """The root fields ``_service`` and ``_entities`` for the Query of ``domain``.

    ``types`` maps entity types to their graphene object types (filled in before the
    schema is built).
    """

    def resolve_type(cls: Any, instance: Record, info: Any) -> Any:
        return types[instance["type"]]

    entity_union = type(
        "EntityUnion",
        (graphene.Union,),
        {
            "Meta": type(
                "Meta",
                (),
                {"name": "_Entity", "types": tuple(types[t] for t in domain.entities)},
            ),
            "resolve_type": classmethod(resolve_type),
        },
    )
    sdl: list[str] = []

    def resolve_service(root: Any, info: Any) -> dict[str, str]:
        if not sdl:
            sdl.append(subgraph_sdl(info.schema, domain))
        return {"sdl": sdl[0]}

    return {
        "_service": graphene.Field(
            graphene.NonNull(ServiceType), name="_service", resolver=resolve_service,
            description="The subgraph SDL (Apollo Federation).",
        ),
        "_entities": graphene.Field(
            graphene.NonNull(graphene.List(entity_union)), name="_entities",
            representations=graphene.Argument(
                graphene.NonNull(graphene.List(graphene.NonNull(AnyScalar)))
            ),
            resolver=_entities_resolver(domain),
            description="Entities by representation (Apollo Federation), in the order given.",
        ),
    }  # fmt: skip
