"""Planned execution of GraphQL queries: graphql-core's answers at a fraction of its cost.

graphql-core executes a query one field at a time, each with its own resolve info, path,
awaitable checks and, for values still being read, a coroutine and a task. For the
catalog's queries (entities by id and lists, their fields and relations) that is most of
a request's CPU. :func:`execute` takes graphql-core's place: a validated document is
compiled once into a plan (:mod:`.compile`), which is then walked over the records the
request's loader returns (:mod:`.run`), with the same resolvers, batches, errors and
answer. Whatever the plan does not cover goes to graphql-core's own ``execute``.
"""

from __future__ import annotations

from typing import Any

from graphene.utils.str_converters import to_camel_case
from graphql import DocumentNode, ExecutionResult, GraphQLSchema
from graphql import execute as general_execute
from graphql.execution.values import get_variable_values
from graphql.pyutils import AwaitableOrValue

from mesh.domain import DomainConfig
from mesh.graphql.lists import plural
from mesh.graphql.loader import Loader
from mesh.graphql.plan.compile import Planner
from mesh.graphql.plan.run import Execution

__all__ = ["Planner", "execute", "planner_of", "root_fields"]

_MAX_VARIABLE_ERRORS = 50
"""As graphql-core's ``execute`` coerces variables."""
_planners: dict[int, tuple[GraphQLSchema, Planner | None]] = {}
"""The planner of each schema that executed a query, by its id (with the schema, so the id
stays its own): one for a worker's lifetime, whose views build the schema once."""


def root_fields(domain: DomainConfig) -> set[str]:
    """The query fields a plan may start from: each entity type's field by id and its list
    (their resolvers only read through the loader)."""
    names = set()
    for entity_type in domain.entities:
        names.add(to_camel_case(entity_type))
        if plural(entity_type) not in domain.entities:
            names.add(to_camel_case(plural(entity_type)))
    return names


def planner_of(schema: GraphQLSchema, loader: Loader) -> Planner | None:
    """The planner of ``schema`` (made at its first request), ``None`` with
    ``MESH_GRAPHQL_PLAN=false``."""
    known = _planners.get(id(schema))
    if known is not None and known[0] is schema:
        return known[1]
    reader = loader.reads.reader
    planner = None
    if reader.context.settings.graphql_plan and schema.query_type is not None:
        planner = Planner(schema, root_fields(reader.domain) & set(schema.query_type.fields))
    _planners[id(schema)] = (schema, planner)
    return planner


def execute(
    schema: GraphQLSchema,
    document: DocumentNode,
    *,
    variable_values: dict[str, Any] | None,
    operation_name: str | None,
    context_value: Loader,
) -> AwaitableOrValue[ExecutionResult]:
    """``graphql.execute(schema, document, ...)`` for a validated ``document``, through its
    plan when it has one (counted in ``dictamesh_graphql_executions_total{executor}``)."""
    loader = context_value
    planner = planner_of(schema, loader)
    if planner is not None:
        chosen = planner.operation(document, operation_name)
        if chosen is not None:
            entry, operation = chosen
            variables = get_variable_values(
                schema, operation.variable_definitions or (), variable_values or {},
                max_errors=_MAX_VARIABLE_ERRORS,
            )  # fmt: skip
            if isinstance(variables, dict):  # else graphql-core answers the errors
                plan = planner.plan(entry, operation, variables)
                if plan is not None:
                    loader.metrics.planned.inc()
                    return Execution(plan, loader, variables).run()
    loader.metrics.general.inc()
    return general_execute(
        schema, document, variable_values=variable_values, operation_name=operation_name,
        context_value=loader,
    )  # fmt: skip
