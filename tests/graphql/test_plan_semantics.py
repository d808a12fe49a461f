"""The planned executor against graphql-core's, in process, on a schema made to break things.

Every field kind a plan completes — non-null and nullable scalars, enums, lists of
nullable and non-null items, nested objects, resolvers that raise, that return awaitables
(or lists of them) and that return values a scalar cannot serialize — over generated
data (values missing, null where not allowed, of the wrong type, out of range) and
generated queries (aliases, fragments, inline fragments, ``@skip``/``@include``,
``__typename``). graphql-core is the oracle: the same data and errors (message,
locations, path, in its order) for every example. The catalog's own schema is compared
on real workers in ``test_plan.py``.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, cast

import pytest
from graphql import (
    ExecutionResult,
    GraphQLArgument,
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLField,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLString,
    execute,
    parse,
    specified_rules,
    validate,
)
from graphql.execution.values import get_variable_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh.graphql.loader import Loader
from mesh.graphql.plan import Planner
from mesh.graphql.plan.run import Execution
from tests.graphql.query_strategies import queries

SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=400,
    suppress_health_check=list(HealthCheck),
)


def _raise(source: Any, info: Any) -> Any:
    raise ValueError(f"boom at {info.field_name}")


async def _later(source: Any, info: Any) -> Any:
    await asyncio.sleep(0)
    return source.get(info.field_name)


def _each_later(source: Any, info: Any) -> Any:
    # A list whose items are awaitables (graphql-core awaits each).
    async def later(item: Any) -> Any:
        await asyncio.sleep(0)
        return item

    found = source.get("children")
    return found if not isinstance(found, list) else [later(item) for item in found]


def _item_fields() -> dict[str, GraphQLField]:
    kind = GraphQLEnumType("Kind", {"A": "a", "B": "b"})
    return {
        "id": GraphQLField(GraphQLNonNull(GraphQLID)),
        "name": GraphQLField(GraphQLString),
        "must": GraphQLField(GraphQLNonNull(GraphQLString)),
        "size": GraphQLField(GraphQLInt),
        "ratio": GraphQLField(GraphQLFloat),
        "flag": GraphQLField(GraphQLNonNull(GraphQLBoolean)),
        "kind": GraphQLField(kind),
        "tags": GraphQLField(GraphQLList(GraphQLString)),
        "strictTags": GraphQLField(GraphQLList(GraphQLNonNull(GraphQLString))),
        "child": GraphQLField(ITEM),
        "strictChild": GraphQLField(GraphQLNonNull(ITEM)),
        "children": GraphQLField(GraphQLList(ITEM)),
        "strictChildren": GraphQLField(GraphQLNonNull(GraphQLList(GraphQLNonNull(ITEM)))),
        "boom": GraphQLField(GraphQLString, resolve=_raise),
        "later": GraphQLField(GraphQLString, resolve=_later),
        "laterChild": GraphQLField(ITEM, resolve=_later),
        "laterChildren": GraphQLField(GraphQLList(ITEM), resolve=_each_later),
    }


ITEM = GraphQLObjectType("Item", _item_fields)


# The records stand in the context (where the catalog's resolvers find their loader).
def _root(source: Any, info: Any) -> Any:
    data: dict[str, Any] = info.context
    return data.get(info.field_name)


def _root_by_id(source: Any, info: Any, id: str) -> Any:
    data: dict[str, Any] = info.context
    return data.get("item") if id == "1" else None


SCHEMA = GraphQLSchema(
    GraphQLObjectType(
        "Query",
        {
            "item": GraphQLField(
                ITEM, {"id": GraphQLArgument(GraphQLNonNull(GraphQLID))}, resolve=_root_by_id
            ),
            "strictItem": GraphQLField(GraphQLNonNull(ITEM), resolve=_root),
            "items": GraphQLField(GraphQLList(ITEM), resolve=_root),
        },
    )
)
ROOTS = {
    "item": st.sampled_from(['(id: "1")', '(id: "2")']),
    "strictItem": st.just(""),
    "items": st.just(""),
}

# Values of every shape a field may meet: fitting, null, of another type, out of range.
_SCALARS = st.one_of(
    st.none(),
    st.text(max_size=4),
    st.integers(-(2**33), 2**33),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["a", "b", "c"]),
)


def _items(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    below: st.SearchStrategy[Any] = st.none() if depth == 0 else _items(depth - 1)
    values: dict[str, st.SearchStrategy[Any]] = dict.fromkeys(
        ("id", "name", "must", "size", "ratio", "flag", "kind", "boom", "later"), _SCALARS
    )
    values.update({
        "tags": st.one_of(st.none(), st.text(max_size=2), st.lists(_SCALARS, max_size=3)),
        "strictTags": st.one_of(st.none(), st.lists(_SCALARS, max_size=3)),
        "child": below,
        "strictChild": below,
        "laterChild": below,
        "children": st.one_of(st.none(), st.lists(below, max_size=3)),
        "strictChildren": st.one_of(st.none(), st.lists(below, max_size=3)),
    })  # fmt: skip
    return st.fixed_dictionaries({}, optional=values)


DATA = st.fixed_dictionaries(
    {},
    optional={"item": _items(3), "strictItem": _items(3), "items": st.lists(_items(2), max_size=3)},
)


def _planned(planner: Planner, text: str, variables: dict[str, Any], data: Any) -> Any:
    """The planned executor's result, or ``None`` when the query has no plan."""
    document = parse(text)
    chosen = planner.operation(document, None)
    assert chosen is not None
    entry, operation = chosen
    coerced = get_variable_values(SCHEMA, operation.variable_definitions or (), variables)
    assert isinstance(coerced, dict)
    plan = planner.plan(entry, operation, coerced)
    if plan is None:
        return None
    # This schema reads no relations: the loader is only the resolvers' context.
    return asyncio.run(Execution(plan, cast(Loader, data), coerced).run())


def _general(text: str, variables: dict[str, Any], data: Any) -> ExecutionResult:
    async def run() -> ExecutionResult:
        result = execute(SCHEMA, parse(text), context_value=data, variable_values=variables)
        return (await result) if asyncio.iscoroutine(result) else cast(ExecutionResult, result)

    return asyncio.run(run())


def _shown(result: ExecutionResult) -> Any:
    errors = [e.formatted for e in result.errors or []]
    return _nan_safe(result.data), _nan_safe(errors)


def _nan_safe(value: Any) -> Any:
    # NaN is not equal to itself; the answers compare equal when both hold one.
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {k: _nan_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_safe(v) for v in value]
    return value


@SETTINGS
@given(query=queries(SCHEMA, ROOTS, depth=3), data=DATA)
def test_planned_answers_are_graphql_cores(query: tuple[str, dict[str, Any]], data: Any) -> None:
    text, variables = query
    assert not validate(SCHEMA, parse(text), specified_rules), text
    planned = _planned(Planner(SCHEMA, ROOTS), text, variables, data)
    assert planned is not None, text
    assert _shown(planned) == _shown(_general(text, variables, data)), text


def test_the_plan_is_compiled_once_per_document_and_directive_values() -> None:
    planner = Planner(SCHEMA, ROOTS)
    document = parse("query Q($v: Boolean!) { items { id @skip(if: $v) name } }")
    chosen = planner.operation(document, None)
    assert chosen is not None
    entry, operation = chosen
    first = planner.plan(entry, operation, {"v": True})
    assert planner.plan(entry, operation, {"v": True}) is first
    other = planner.plan(entry, operation, {"v": False})
    assert other is not None
    assert other is not first
    assert planner.compiled == 2

    def keys(plan: Any) -> list[str]:
        item = plan.root.fields[0].completion.item  # items: [Item], then Item
        return [f.key for f in item.selection.fields]

    assert keys(first) == ["name"]
    assert keys(other) == ["id", "name"]


@pytest.mark.parametrize(
    "text",
    [
        "{ __schema { types { name } } }",
        '{ __type(name: "Item") { name } }',
        "mutation { item }",
        "{ unknownRoot }",
        "{ other { ... on Named { name } } }",
    ],
)
def test_what_no_plan_covers_is_left_to_graphql_core(text: str) -> None:
    named = GraphQLInterfaceType("Named", {"name": GraphQLField(GraphQLString)})
    thing = GraphQLObjectType("Thing", {"name": GraphQLField(GraphQLString)}, [named])
    schema = GraphQLSchema(
        GraphQLObjectType(
            "Query",
            {
                "other": GraphQLField(named),
                "unknownRoot": GraphQLField(GraphQLString),
                "items": GraphQLField(GraphQLList(ITEM)),
            },
        ),
        GraphQLObjectType("Mutation", {"item": GraphQLField(GraphQLString)}),
        types=[thing],
    )
    planner = Planner(schema, ["other", "items"])
    chosen = planner.operation(parse(text), None)
    assert chosen is not None
    assert planner.plan(*chosen, {}) is None


def test_an_ambiguous_or_unknown_operation_is_left_to_graphql_core() -> None:
    planner = Planner(SCHEMA, ROOTS)
    two = parse("query A { items { id } } query B { items { name } }")
    assert planner.operation(two, None) is None
    assert planner.operation(two, "C") is None
    chosen = planner.operation(two, "B")
    assert chosen is not None
    assert chosen[1].name is not None
    assert chosen[1].name.value == "B"


def test_cancelling_the_execution_cancels_the_resolvers_it_started() -> None:
    started: list[asyncio.Future[None]] = []
    running = asyncio.Event()

    async def stuck(source: Any, info: Any) -> Any:
        waiter = asyncio.get_running_loop().create_future()
        started.append(waiter)
        running.set()
        await waiter

    schema = GraphQLSchema(
        GraphQLObjectType("Query", {"a": GraphQLField(GraphQLString, resolve=stuck)})
    )
    planner = Planner(schema, ["a"])
    chosen = planner.operation(parse("{ a }"), None)
    assert chosen is not None
    plan = planner.plan(*chosen, {})
    assert plan is not None

    async def run() -> None:
        task = asyncio.ensure_future(Execution(plan, cast(Loader, None), {}).run())
        await running.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
        assert started[0].cancelled()

    asyncio.run(run())
