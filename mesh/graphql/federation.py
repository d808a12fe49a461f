"""Apollo Federation v2 subgraph support: ``_service``, ``_entities``, the directives.

Every entity type is an entity of the federated graph, keyed by its id field
(``@key(fields: "id")``), and every field shows its access policy, so a router enforces
what this subgraph does (:func:`policy_marks`): ``@requiresScopes`` where the domain config
names scopes, ``@authenticated`` on every other root field and entity field.
:func:`federation_fields` adds the two root fields the gateway (Apollo Router, Hive
Gateway) needs:

- ``_service { sdl }``: the subgraph SDL, printed once per schema by graphene-federation
  (:func:`subgraph_sdl`) — ``extend schema @link(url: …/federation/v2.5, import: […])``,
  then the schema with its directives and without the federation plumbing (``_service``,
  ``_entities``, ``_Any``, ``_Entity``, ``_Service``), as the federation spec asks (the
  library also makes ``PageInfo`` ``@shareable``, so other subgraphs may define theirs);
- ``_entities(representations: [_Any!]!): [_Entity]!``: the entities named by
  representations such as ``{"__typename": "Customer", "id": "1"}``, in the order given,
  ``null`` for an unknown or deleted id. They are read through the request's
  :class:`~mesh.graphql.loader.Loader` like every other read, all in the same batch (one
  per owning worker). A representation with an unknown ``__typename`` or without its key
  fails the field with an error naming it.

graphene-federation's own ``_entities`` resolves one representation at a time into
graphene objects (and its ``_Any`` hands inline literals on as syntax nodes), so the
executable schema keeps the fields below; the library builds a schema of the same types
only to print the SDL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import graphene
import graphene_federation
from graphene.utils.str_converters import to_camel_case
from graphene_directives.utils import (
    non_field_attribute_name,
)
from graphene_federation.apollo_versions import (
    get_directive_from_name,
    get_directives_based_on_version,
)
from graphql import (
    DocumentNode,
    TypeDefinitionNode,
    ValueNode,
    get_named_type,
    graphql_sync,
    parse,
    print_ast,
    specified_scalar_types,
    value_from_ast_untyped,
)

from mesh.catalog.reader import parse_id
from mesh.domain import DomainConfig, EntitySpec
from mesh.errors import ApiError, MeshError
from mesh.graphql.limits import PublicGraphQLError
from mesh.graphql.lists import PageInfo
from mesh.graphql.loader import Loader
from mesh.graphql.reads import Key, live

Record = dict[str, Any]
Mark = tuple[str, dict[str, Any]]
"""A directive on a type or field: its name and arguments (``("key", {"fields": "id"})``)."""
Plan = dict[str, dict[str | None, list[Mark]]]
"""The directives of each type (under ``None``) and of its fields, by GraphQL name."""

FEDERATION_VERSION = graphene_federation.FederationVersion.VERSION_2_5
"""@authenticated and @requiresScopes came with 2.5."""
MAX_REPRESENTATIONS = 1000
"""Representations one ``_entities`` call may carry (each one is a read)."""

_DIRECTIVES = get_directives_based_on_version(FEDERATION_VERSION)
# The scalars of the directives' arguments (FieldSet, federation__Scope): graphql-core
# prints them with the schema, but they are federation's, brought by @link. Left in, a
# composer takes the unimported `FieldSet` for a type of this subgraph and shows it to
# clients of the supergraph.
_FEDERATION_TYPES = frozenset(
    get_named_type(arg.type).name for d in _DIRECTIVES.values() for arg in d.args.values()
) - set(specified_scalar_types)
_SHAREABLE_MARK = non_field_attribute_name(get_directive_from_name("shareable", FEDERATION_VERSION))


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


def policy_marks(spec: EntitySpec | None, attr: str) -> list[Mark]:
    """The access directives of field ``attr`` of ``spec``'s type (``None``: a root field).

    Every request must be authenticated, so every field is ``@authenticated`` but two
    kinds: a field with a scope policy, whose ``@requiresScopes`` asks for an authenticated
    caller already; and the key, which the caller sent in the representation and other
    subgraphs share (a composer merges field directives, so the key's would bind theirs).
    The types themselves carry none: on a type, a router reads it as binding every field
    that returns the type, in other subgraphs too.
    """
    if spec is None:
        return [("authenticated", {})]
    if attr == spec.key:
        return []
    field = spec.fields.get(attr)
    if field is not None and field.requires_scopes:
        return [("requiresScopes", {"scopes": [list(field.requires_scopes)]})]
    return [("authenticated", {})]


def _mark_field(field: Any, mark: Mark) -> None:
    name, args = mark
    if name == "authenticated":
        graphene_federation.authenticated(field, federation_version=FEDERATION_VERSION)
    elif name == "requiresScopes":
        graphene_federation.requires_scope(
            field, scopes=args["scopes"], federation_version=FEDERATION_VERSION
        )
    else:
        raise ValueError(f"no field directive @{name}")


def _field_name(attr: str, field: Any) -> str:
    name: str = field.name or to_camel_case(attr)
    return name


def _mark(domain: DomainConfig, root_fields: dict[str, Any], types: dict[str, Any]) -> Plan:
    """Put the directives on the types and fields; the plan of them, by type and field
    (``None`` for the type), to check the printed SDL against."""
    plan: Plan = {"Query": {}}
    for attr, field in root_fields.items():
        plan["Query"][_field_name(attr, field)] = marks = policy_marks(None, attr)
        for mark in marks:
            _mark_field(field, mark)
    for entity_type, spec in domain.entities.items():
        cls = types[entity_type]
        graphene_federation.key(key_field(spec), federation_version=FEDERATION_VERSION)(cls)
        planned: dict[str | None, list[Mark]] = {None: [("key", {"fields": key_field(spec)})]}
        for attr, mounted in cls._meta.fields.items():
            planned[_field_name(attr, mounted)] = marks = policy_marks(spec, attr)
            for mark in marks:
                _mark_field(getattr(cls, attr), mark)
        plan[spec.graphql_name] = planned
    return plan


def _printed_marks(document: DocumentNode) -> dict[tuple[str, str | None], list[Mark]]:
    found: dict[tuple[str, str | None], list[Mark]] = {}

    def marks(node: Any) -> list[Mark]:
        return [
            (d.name.value, {a.name.value: value_from_ast_untyped(a.value) for a in d.arguments})
            for d in node.directives or ()
        ]

    for definition in document.definitions:
        if isinstance(definition, TypeDefinitionNode):
            name = definition.name.value
            found[name, None] = marks(definition)
            for field in getattr(definition, "fields", None) or ():
                found[name, field.name.value] = marks(field)
    return found


def _check(document: DocumentNode, plan: Plan) -> None:
    # graphene-directives writes the directives into the printed schema by pattern: one
    # it could not place would leave a router enforcing less than this subgraph does.
    printed = _printed_marks(document)
    for type_name, fields in plan.items():
        for field_name, marks in fields.items():
            shown = printed.get((type_name, field_name), [])
            missing = [m for m in marks if m not in shown]
            if missing:
                where = type_name if field_name is None else f"{type_name}.{field_name}"
                raise MeshError(f"the subgraph SDL lacks {missing} on {where}: {shown}")


def subgraph_sdl(domain: DomainConfig, root_fields: dict[str, Any], types: dict[str, Any]) -> str:
    """The subgraph SDL of ``domain``'s schema, printed by graphene-federation.

    ``root_fields`` are the Query's fields but the federation ones, ``types`` maps entity
    types to their graphene object types; both get their directives here (call once).
    """
    plan = _mark(domain, root_fields, types)
    query = type("Query", (graphene.ObjectType,), dict(root_fields))
    try:
        built = graphene_federation.build_schema(
            query=query, types=list(types.values()), federation_version=FEDERATION_VERSION
        )
    finally:
        # graphene-federation marks the schema's PageInfo @shareable on the class itself,
        # which every build shares: left there, the next build refuses it as a duplicate.
        if _SHAREABLE_MARK in vars(PageInfo):
            delattr(PageInfo, _SHAREABLE_MARK)
    answer = graphql_sync(built.graphql_schema, "{ _service { sdl } }")
    if answer.errors or answer.data is None:
        raise MeshError(f"graphene-federation printed no subgraph SDL: {answer.errors}")
    document = parse(answer.data["_service"]["sdl"])
    kept = tuple(
        d
        for d in document.definitions
        if not (isinstance(d, TypeDefinitionNode) and d.name.value in _FEDERATION_TYPES)
    )
    document = DocumentNode(definitions=kept)
    _check(document, plan)
    return f"{print_ast(document)}\n"


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


def federation_fields(domain: DomainConfig, types: dict[str, Any], sdl: str) -> dict[str, Any]:
    """The root fields ``_service`` (answering ``sdl``) and ``_entities`` for the Query of
    ``domain``.

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
    service = {"sdl": sdl}

    def resolve_service(root: Any, info: Any) -> dict[str, str]:
        return service

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
