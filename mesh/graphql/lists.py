"""The list root fields: ``customers(first:, after:, filter:)`` and likewise per type.

Each answers a Relay-style connection ``{edges {cursor node} nodes pageInfo {hasNextPage
endCursor}}`` in id order, with an equality filter input per type (``CustomerFilter``:
any of its plain fields, ``id`` and forward references as ``ID``; all given fields must
match). Pages come from a fleet-wide scan (:mod:`mesh.graphql.scan`); the records found
are put in the request's loader so nested fields do not read them again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import graphene

from mesh.domain import EntitySpec, FieldType
from mesh.errors import UnavailableError
from mesh.graphql.limits import PublicGraphQLError
from mesh.graphql.loader import Loader
from mesh.graphql.scan import decode_cursor, encode_cursor, scan_fleet

DEFAULT_PAGE = 20
MAX_PAGE = 100

_FILTER_SCALARS: dict[FieldType, Any] = {
    FieldType.STRING: graphene.String,
    FieldType.INTEGER: graphene.Int,
    FieldType.LONG: graphene.BigInt,
    FieldType.FLOAT: graphene.Float,
    FieldType.BOOLEAN: graphene.Boolean,
    FieldType.DECIMAL: graphene.String,  # compared as decimals: "12.5" matches "12.50"
    FieldType.TIMESTAMP: graphene.String,
}


class PageInfo(graphene.ObjectType):  # type: ignore[misc]
    """Where a page ends and whether another follows."""

    has_next_page = graphene.Boolean(required=True)
    end_cursor = graphene.String(description="Pass as `after` for the next page.")


def plural(entity_type: str) -> str:
    """The list field of an entity type: ``customer`` → ``customers`` (camelCased later)."""
    if entity_type.endswith(("s", "x", "z", "ch", "sh")):
        return entity_type + "es"
    if entity_type.endswith("y") and entity_type[-2:-1] not in "aeiou":
        return entity_type[:-1] + "ies"
    return entity_type + "s"


def filter_type(spec: EntitySpec) -> Any:
    """The equality filter input of an entity type (``CustomerFilter``)."""
    attrs: dict[str, Any] = {
        "Meta": type("Meta", (), {"name": f"{spec.graphql_name}Filter",
                                  "description": "Equality on every given field."}),
    }  # fmt: skip
    for name, field in spec.fields.items():
        scalar = graphene.ID if name == spec.key or field.references else None
        attrs[name] = graphene.InputField(scalar or _FILTER_SCALARS[field.type])
    return type(f"{spec.graphql_name}Filter", (graphene.InputObjectType,), attrs)


def connection_type(spec: EntitySpec, node: Any) -> Any:
    """The connection of an entity type (``CustomerConnection`` with ``CustomerEdge``);
    ``node`` is the node type or a function returning it (types are built lazily)."""
    edge = type(
        f"{spec.graphql_name}Edge",
        (graphene.ObjectType,),
        {
            "cursor": graphene.String(required=True),
            "node": graphene.Field(graphene.NonNull(node)),
        },
    )
    return type(
        f"{spec.graphql_name}Connection",
        (graphene.ObjectType,),
        {
            "edges": graphene.NonNull(graphene.List(graphene.NonNull(edge))),
            "nodes": graphene.NonNull(graphene.List(graphene.NonNull(node))),
            "page_info": graphene.Field(PageInfo, required=True),
        },
    )


def list_resolver(entity_type: str) -> Callable[..., Awaitable[dict[str, Any]]]:
    """The resolver of ``customers(first:, after:, filter:)`` for ``entity_type``."""

    async def resolve(
        root: Any,
        info: Any,
        first: int | None = DEFAULT_PAGE,
        after: str | None = None,
        filter: dict[str, Any] | None = None,  # the GraphQL argument's name
    ) -> dict[str, Any]:
        if first is None:  # an explicit null: the default page
            first = DEFAULT_PAGE
        if not 0 <= first <= MAX_PAGE:
            raise PublicGraphQLError(f"'first' must be between 0 and {MAX_PAGE}")
        try:
            after_id = None if after is None else decode_cursor(entity_type, after)
        except ValueError as exc:
            raise PublicGraphQLError(str(exc)) from None
        loader: Loader = info.context
        loader.scanned()
        where = dict(filter or {})
        fields = loader.reads.reader.domain.entities[entity_type].fields
        for name in where:  # a filter on a withheld field would tell its values
            scopes = fields[name].requires_scopes if name in fields else []
            if scopes and (loader.principal is None or not loader.principal.has_scopes(scopes)):
                raise PublicGraphQLError(
                    f"filtering on '{name}' requires the scope {', '.join(scopes)}"
                )
        try:
            # One more than asked tells whether another page follows.
            found = await scan_fleet(
                loader.reads.reader, loader.tenant, entity_type, where, after_id, first + 1
            )
        except UnavailableError as exc:
            raise PublicGraphQLError(str(exc)) from None
        page = found[:first]
        for rec in page:
            loader.prime(rec)
        edges = [{"cursor": encode_cursor(entity_type, r["id"]), "node": r} for r in page]
        return {
            "edges": edges,
            "nodes": page,
            "page_info": {
                "has_next_page": len(found) > first,
                "end_cursor": edges[-1]["cursor"] if edges else None,
            },
        }

    return resolve
