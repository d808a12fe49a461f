"""The query-safety layer: each limit is shown to accept just under and reject just over."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

import graphene
import pytest
from graphql import (
    ExecutionResult,
    GraphQLError,
    GraphQLSchema,
    execute,
    get_introspection_query,
    parse,
    specified_rules,
    validate,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.errors import MeshError
from mesh.graphql.limits import (
    INTERNAL_ERROR_MESSAGE,
    BodyTooLargeError,
    GraphQLLimits,
    PublicGraphQLError,
    QueryCache,
    check_body_size,
    format_errors,
    limit_rules,
    parse_query,
    run_with_timeout,
    validation_rules,
)

# -- a small recursive schema ---------------------------------------------------------------


class Node(graphene.ObjectType):  # type: ignore[misc]
    id = graphene.ID()
    name = graphene.String()
    child = graphene.Field(lambda: Node)
    children = graphene.List(lambda: Node)
    boom = graphene.String()
    missing = graphene.String()
    slow = graphene.String()

    @staticmethod
    def resolve_child(root: Any, info: Any) -> dict[str, str]:
        return {"id": "2", "name": "child"}

    @staticmethod
    def resolve_children(root: Any, info: Any) -> list[dict[str, str]]:
        return [{"id": "3", "name": "a"}, {"id": "4", "name": "b"}]

    @staticmethod
    def resolve_boom(root: Any, info: Any) -> str:
        raise RuntimeError("password=hunter2 at db.internal:5432")

    @staticmethod
    def resolve_missing(root: Any, info: Any) -> str:
        raise PublicGraphQLError("no customer with id 9")

    @staticmethod
    async def resolve_slow(root: Any, info: Any) -> str:
        state: dict[str, bool] = info.context
        state["started"] = True
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise
        return "done"


class Query(graphene.ObjectType):  # type: ignore[misc]
    node = graphene.Field(Node)

    @staticmethod
    def resolve_node(root: Any, info: Any) -> dict[str, str]:
        return {"id": "1", "name": "root"}


SCHEMA: GraphQLSchema = graphene.Schema(query=Query).graphql_schema


def nested(depth: int) -> str:
    """A valid query of exactly ``depth`` field levels (``depth >= 2``)."""
    inner = "id"
    for _ in range(depth - 2):
        inner = f"child {{ {inner} }}"
    return f"{{ node {{ {inner} }} }}"


def errors_of(text: str, limits: GraphQLLimits) -> list[str]:
    return [e.message for e in QueryCache(SCHEMA, limits).prepare(text).errors]


def depth_errors(text: str, limits: GraphQLLimits) -> list[str]:
    return [m for m in errors_of(text, limits) if "depth" in m]


# -- limits object ---------------------------------------------------------------------------


def test_limits_defaults_are_production_safe_and_frozen() -> None:
    limits = GraphQLLimits()
    assert limits.max_depth == 10
    assert limits.max_aliases == 30
    assert limits.max_tokens == 2000
    assert limits.max_body_bytes == 64 * 1024
    assert limits.timeout_s == 5.0
    assert limits.introspection is True
    assert limits.error_detail is False
    assert limits.parse_cache_size == 512
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.max_depth = 99  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad",
    [{"max_depth": 0}, {"max_tokens": 0}, {"parse_cache_size": -1}, {"timeout_s": 0.0}],
)
def test_limits_reject_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="GraphQLLimits"):
        GraphQLLimits(**bad)


# -- depth -----------------------------------------------------------------------------------


def test_nested_helper_builds_the_depth_it_claims() -> None:
    assert nested(2) == "{ node { id } }"
    assert nested(4) == "{ node { child { child { id } } } }"


def test_depth_at_limit_is_accepted_and_one_more_rejected() -> None:
    limits = GraphQLLimits(max_depth=5)
    assert errors_of(nested(5), limits) == []
    assert errors_of(nested(6), limits) == [
        "The operation has depth 6, which exceeds the maximum depth of 5."
    ]


def test_depth_counts_fragment_selections() -> None:
    limits = GraphQLLimits(max_depth=5)
    # node(1) child(2) + F: child(3) child(4) id(5)
    ok = "{ node { child { ...F } } } fragment F on Node { child { child { id } } }"
    assert errors_of(ok, limits) == []
    # one more level inside the fragment
    too_deep = "{ node { child { ...F } } } fragment F on Node { child { child { child { id } } } }"
    assert depth_errors(too_deep, limits) == [
        "The operation has depth 6, which exceeds the maximum depth of 5."
    ]


def test_depth_through_nested_fragments_and_inline_fragments() -> None:
    limits = GraphQLLimits(max_depth=6)
    text = """
        query Deep { node { ...A } }
        fragment A on Node { child { ... on Node { ...B } } }
        fragment B on Node { children { ...C } }
        fragment C on Node { child { child { id } } }
    """
    # node 1, child 2, children 3, child 4, child 5, id 6
    assert errors_of(text, limits) == []
    assert depth_errors(text, GraphQLLimits(max_depth=5)) == [
        "Operation 'Deep' has depth 6, which exceeds the maximum depth of 5."
    ]


def test_each_operation_is_measured_on_its_own() -> None:
    text = f"query Shallow {nested(3)} query Deep {nested(4)}"
    assert depth_errors(text, GraphQLLimits(max_depth=3)) == [
        "Operation 'Deep' has depth 4, which exceeds the maximum depth of 3."
    ]


@pytest.mark.timeout(10)
def test_fragment_cycles_are_reported_not_recursed_into() -> None:
    text = """
        { node { ...A } }
        fragment A on Node { child { ...B } }
        fragment B on Node { child { ...A } }
    """
    messages = errors_of(text, GraphQLLimits())
    assert any("Cannot spread fragment 'A' within itself" in m for m in messages), messages
    # The limit rules alone terminate too and see a finite depth.
    document = parse(text)
    assert validate(SCHEMA, document, rules=limit_rules(GraphQLLimits(max_depth=2))) != []
    assert validate(SCHEMA, document, rules=limit_rules(GraphQLLimits(max_depth=5))) == []


def test_document_too_deep_for_the_parser_is_an_error_not_a_crash() -> None:
    # 600 levels fit in the token limit but exceed the parser's recursion limit.
    assert errors_of(nested(600), GraphQLLimits()) == [
        "Document is nested too deeply. Parsing aborted."
    ]


def test_deep_document_is_rejected_by_the_limit_rules_alone() -> None:
    # Deep enough that some spec rules would recurse a lot; the limit rules stop it first.
    assert errors_of(nested(120), GraphQLLimits()) == [
        "The operation has depth 120, which exceeds the maximum depth of 10."
    ]


@pytest.mark.timeout(10)
def test_long_fragment_chains_do_not_recurse() -> None:
    n = 1500
    fragments = " ".join(f"fragment F{i} on Node {{ ...F{i + 1} }}" for i in range(n))
    text = f"{{ node {{ ...F0 }} }} {fragments} fragment F{n} on Node {{ child {{ id }} }}"
    document = parse(text)
    errors = validate(SCHEMA, document, rules=limit_rules(GraphQLLimits(max_depth=2)))
    assert [e.message for e in errors] == [
        "The operation has depth 3, which exceeds the maximum depth of 2."
    ]


@settings(max_examples=60, deadline=None)
@given(depth=st.integers(min_value=2, max_value=30), max_depth=st.integers(1, 25))
def test_depth_property_accepted_iff_within_limit(depth: int, max_depth: int) -> None:
    rejected = depth_errors(nested(depth), GraphQLLimits(max_depth=max_depth)) != []
    assert rejected == (depth > max_depth)


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(st.integers(min_value=0, max_value=4), min_size=1, max_size=6),
    max_depth=st.integers(1, 20),
)
def test_depth_property_through_fragment_chains(chunks: list[int], max_depth: int) -> None:
    # F_i adds chunks[i] levels of `child` then spreads F_{i+1}; the last one selects `id`.
    fragments = []
    for i, levels in enumerate(chunks):
        body = f"...F{i + 1}"
        for _ in range(levels):
            body = f"child {{ {body} }}"
        fragments.append(f"fragment F{i} on Node {{ {body} }}")
    fragments.append(f"fragment F{len(chunks)} on Node {{ id }}")
    text = "{ node { ...F0 } } " + " ".join(fragments)
    depth = 1 + sum(chunks) + 1
    messages = depth_errors(text, GraphQLLimits(max_depth=max_depth))
    if depth > max_depth:
        assert messages == [
            f"The operation has depth {depth}, which exceeds the maximum depth of {max_depth}."
        ]
    else:
        assert messages == []


# -- aliases ---------------------------------------------------------------------------------


def aliased(n: int) -> str:
    return "{ node { " + " ".join(f"a{i}: id" for i in range(n)) + " } }"


def test_aliases_at_limit_accepted_and_one_more_rejected() -> None:
    limits = GraphQLLimits(max_aliases=4)
    assert errors_of(aliased(4), limits) == []
    assert errors_of(aliased(5), limits) == [
        "The operation uses 5 aliases, which exceeds the maximum of 4."
    ]


def test_aliases_in_a_fragment_count_once_per_spread() -> None:
    text = """
        { node { ...F child { ...F children { ...F } } } }
        fragment F on Node { x: id y: name }
    """
    assert errors_of(text, GraphQLLimits(max_aliases=6)) == []
    assert errors_of(text, GraphQLLimits(max_aliases=5)) == [
        "The operation uses 6 aliases, which exceeds the maximum of 5."
    ]


@pytest.mark.timeout(10)
def test_alias_count_of_exponential_fragment_fan_out_is_computed_without_expanding() -> None:
    n = 60  # 2**60 expanded aliases: only memoisation can count these
    fragments = " ".join(f"fragment F{i} on Node {{ ...F{i + 1} ...F{i + 1} }}" for i in range(n))
    text = f"{{ node {{ ...F0 }} }} {fragments} fragment F{n} on Node {{ a: id }}"
    started = time.perf_counter()
    errors = validate(SCHEMA, parse(text), rules=limit_rules(GraphQLLimits()))
    assert time.perf_counter() - started < 2.0
    assert [e.message for e in errors] == [
        f"The operation uses {2**n} aliases, which exceeds the maximum of 30.",
        f"The operation selects {2**n + 1} fields, which exceeds the maximum of 300.",
    ]


# -- fields ----------------------------------------------------------------------------------


def repeated(n: int) -> str:
    return "{ node { " + " ".join(["id"] * n) + " } }"


def test_fields_at_limit_accepted_and_one_more_rejected() -> None:
    limits = GraphQLLimits(max_fields=5)  # node + 4 ids
    assert errors_of(repeated(4), limits) == []
    assert errors_of(repeated(5), limits) == [
        "The operation selects 6 fields, which exceeds the maximum of 5."
    ]


def test_fields_in_a_fragment_count_once_per_spread() -> None:
    text = "{ node { ...F child { ...F } } } fragment F on Node { id name }"
    assert errors_of(text, GraphQLLimits(max_fields=6)) == []  # node, 2, child, 2
    assert errors_of(text, GraphQLLimits(max_fields=5)) == [
        "The operation selects 6 fields, which exceeds the maximum of 5."
    ]


@pytest.mark.timeout(10)
def test_many_repeated_fields_are_rejected_before_the_quadratic_spec_check() -> None:
    cache = QueryCache(SCHEMA, GraphQLLimits(max_tokens=10_000))
    started = time.perf_counter()
    prepared = cache.prepare(repeated(3000))
    assert time.perf_counter() - started < 0.5  # the spec's check alone takes seconds
    assert [e.message for e in prepared.errors] == [
        "The operation selects 3001 fields, which exceeds the maximum of 300."
    ]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(min_value=1, max_value=40), max_aliases=st.integers(1, 35))
def test_alias_property_accepted_iff_within_limit(n: int, max_aliases: int) -> None:
    rejected = errors_of(aliased(n), GraphQLLimits(max_aliases=max_aliases)) != []
    assert rejected == (n > max_aliases)


# -- tokens and size -------------------------------------------------------------------------


def test_token_limit_at_and_over() -> None:
    limits = GraphQLLimits(max_tokens=10)
    # `{ node { id id id id id } }` is exactly 10 tokens
    parse_query("{ node { id id id id id } }", limits)
    with pytest.raises(GraphQLError, match="more than 10 tokens"):
        parse_query("{ node { id id id id id id } }", limits)


def test_huge_query_is_rejected_before_parsing_all_of_it() -> None:
    limits = GraphQLLimits(max_tokens=2000, max_body_bytes=50_000_000)
    text = "{ node { " + "id " * 2_000_000 + "} }"
    started = time.perf_counter()
    with pytest.raises(GraphQLError, match="more than 2000 tokens"):
        parse_query(text, limits)
    # Parsing all 2M tokens takes many seconds; stopping at 2000 takes milliseconds.
    assert time.perf_counter() - started < 1.0


def test_overlong_text_is_rejected_before_lexing() -> None:
    limits = GraphQLLimits(max_body_bytes=100)
    comment_only = "#" + "x" * 200 + "\n{ node { id } }"
    with pytest.raises(GraphQLError, match="more than the limit of 100"):
        parse_query(comment_only, limits)
    assert parse_query("# short\n{ node { id } }", limits).definitions


def test_syntax_errors_come_back_as_errors_not_exceptions() -> None:
    prepared = QueryCache(SCHEMA, GraphQLLimits()).prepare("{ node { id ")
    assert prepared.document is None
    assert [e.message for e in prepared.errors] == ["Syntax Error: Expected Name, found <EOF>."]


# -- introspection ---------------------------------------------------------------------------


def test_standard_introspection_query_passes_default_limits() -> None:
    assert errors_of(get_introspection_query(descriptions=True), GraphQLLimits()) == []


def test_introspection_subtree_is_still_bounded() -> None:
    inner = "name"
    for _ in range(10):
        inner = f"fields {{ type {{ {inner} }} }}"
    text = f'{{ __type(name: "Node") {{ {inner} }} }}'  # depth 22
    assert depth_errors(text, GraphQLLimits()) == [
        "The operation has introspection depth 22,"
        " which exceeds the maximum introspection depth of 15."
    ]


@pytest.mark.parametrize(
    "text", ["{ __schema { queryType { name } } }", '{ __type(name: "Node") { name } }']
)
def test_introspection_off_rejects_schema_and_type(text: str) -> None:
    assert errors_of(text, GraphQLLimits(introspection=True)) == []
    messages = errors_of(text, GraphQLLimits(introspection=False))
    name = text.split()[1].split("(")[0]
    assert messages == [
        f"GraphQL introspection is disabled, but the query contains the field '{name}'."
    ]


def test_introspection_off_still_allows_typename() -> None:
    text = "{ __typename node { __typename id } }"
    assert errors_of(text, GraphQLLimits(introspection=False)) == []


def test_introspection_off_rejects_introspection_hidden_in_a_fragment() -> None:
    text = "{ ...Q } fragment Q on Query { __schema { types { name } } }"
    messages = errors_of(text, GraphQLLimits(introspection=False))
    assert any("introspection is disabled" in m for m in messages), messages


# -- validation rules usable with validate() -------------------------------------------------


def test_validation_rules_extend_the_specified_rules() -> None:
    limits = GraphQLLimits(max_depth=3, introspection=False)
    rules = validation_rules(limits)
    assert rules[: len(specified_rules)] == tuple(specified_rules)
    assert validation_rules(limits) is rules  # built once per limits
    errors = validate(SCHEMA, parse(nested(4)), rules=rules)
    assert [e.message for e in errors] == [
        "The operation has depth 4, which exceeds the maximum depth of 3."
    ]
    errors = validate(SCHEMA, parse("{ __schema { types { nmae } } }"), rules=rules)
    messages = [e.message for e in errors]
    assert any("introspection is disabled" in m for m in messages), messages
    assert any("Cannot query field 'nmae'" in m for m in messages), messages  # spec rules ran


# -- errors ----------------------------------------------------------------------------------


async def run(text: str, limits: GraphQLLimits, context: Any = None) -> ExecutionResult:
    prepared = QueryCache(SCHEMA, limits).prepare(text)
    assert prepared.errors == ()
    assert prepared.document is not None
    return await run_with_timeout(execute(SCHEMA, prepared.document, context_value=context), limits)


async def test_error_detail_off_hides_exceptions_but_keeps_public_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = GraphQLLimits(error_detail=False)
    result = await run("{ node { id boom missing } }", limits)
    assert result.data == {"node": {"id": "1", "boom": None, "missing": None}}
    assert result.errors is not None
    formatted = format_errors(result.errors, limits)
    by_path = {tuple(e["path"]): e for e in formatted}
    assert by_path[("node", "boom")]["message"] == INTERNAL_ERROR_MESSAGE
    assert by_path[("node", "missing")]["message"] == "no customer with id 9"
    assert by_path[("node", "boom")]["locations"] == [{"line": 1, "column": 13}]
    dumped = json.dumps(formatted)
    assert "hunter2" not in dumped
    assert "RuntimeError" not in dumped
    assert "Traceback" not in dumped
    # ... but the operator can still find out what happened.
    assert "hunter2" in caplog.text


async def test_error_detail_on_shows_exception_text_and_type() -> None:
    limits = GraphQLLimits(error_detail=True)
    result = await run("{ node { boom } }", limits)
    assert result.errors is not None
    (formatted,) = format_errors(result.errors, limits)
    assert formatted["message"] == "password=hunter2 at db.internal:5432"
    assert formatted["extensions"]["exception"]["type"] == "RuntimeError"
    stacktrace = formatted["extensions"]["exception"]["stacktrace"]
    assert any("resolve_boom" in line for line in stacktrace)


@pytest.mark.parametrize(("detail", "suggested"), [(False, False), (True, True)])
def test_suggestions_are_stripped_without_detail(detail: bool, suggested: bool) -> None:
    limits = GraphQLLimits(error_detail=detail)
    prepared = QueryCache(SCHEMA, limits).prepare("{ node { nmae } }")
    assert "Did you mean 'name'?" in prepared.errors[0].message
    (formatted,) = format_errors(prepared.errors, limits)
    assert formatted["message"].startswith("Cannot query field 'nmae' on type 'Node'.")
    assert ("Did you mean" in formatted["message"]) is suggested
    assert formatted["locations"] == [{"line": 1, "column": 10}]


def test_limit_errors_are_shown_without_detail() -> None:
    limits = GraphQLLimits(max_depth=2)
    prepared = QueryCache(SCHEMA, limits).prepare(nested(3))
    assert [e["message"] for e in format_errors(prepared.errors, limits)] == [
        "The operation has depth 3, which exceeds the maximum depth of 2."
    ]


# -- timeout ---------------------------------------------------------------------------------


@pytest.mark.timeout(10)
async def test_timeout_cancels_a_slow_resolver() -> None:
    limits = GraphQLLimits(timeout_s=0.05)
    state: dict[str, bool] = {}
    started = time.perf_counter()
    result = await run("{ node { id slow } }", limits, context=state)
    assert time.perf_counter() - started < 2.0
    assert result.data is None
    assert result.errors is not None
    assert [e.message for e in result.errors] == ["query took longer than 0.05 s and was cancelled"]
    assert state == {"started": True, "cancelled": True}
    assert format_errors(result.errors, limits)[0]["message"].startswith("query took longer")


async def test_fast_async_query_is_not_affected_by_the_timeout() -> None:
    limits = GraphQLLimits(timeout_s=5.0)

    async def fine() -> ExecutionResult:
        return ExecutionResult(data={"ok": True})

    assert (await run_with_timeout(fine(), limits)).data == {"ok": True}


async def test_synchronous_result_passes_through() -> None:
    result = await run("{ node { id name } }", GraphQLLimits(timeout_s=0.01))
    assert result.errors is None
    assert result.data == {"node": {"id": "1", "name": "root"}}


# -- cache -----------------------------------------------------------------------------------


def test_cache_returns_the_same_document_for_a_repeated_query() -> None:
    cache = QueryCache(SCHEMA, GraphQLLimits())
    first = cache.prepare(nested(3))
    second = cache.prepare(nested(3))
    assert first.document is not None
    assert second.document is first.document
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.prepare(nested(4)).document is not first.document


def test_cache_is_bounded_and_evicts_least_recently_used() -> None:
    cache = QueryCache(SCHEMA, GraphQLLimits(parse_cache_size=3))
    queries = [nested(d) for d in range(2, 7)]
    documents = [cache.prepare(q).document for q in queries[:3]]
    cache.prepare(queries[0])  # touch: queries[1] is now the oldest
    cache.prepare(queries[3])
    cache.prepare(queries[4])
    assert len(cache) == 3
    assert cache.prepare(queries[0]).document is documents[0]  # kept: recently used
    assert cache.prepare(queries[1]).document is not documents[1]  # evicted: parsed anew


def test_cache_keeps_validation_errors_too() -> None:
    cache = QueryCache(SCHEMA, GraphQLLimits(max_depth=2))
    first = cache.prepare(nested(3))
    assert first.errors
    assert cache.prepare(nested(3)) is first
    assert cache.hits == 1


def test_cache_size_zero_disables_caching() -> None:
    cache = QueryCache(SCHEMA, GraphQLLimits(parse_cache_size=0))
    assert cache.prepare(nested(3)).document is not cache.prepare(nested(3)).document
    assert len(cache) == 0


# -- body size -------------------------------------------------------------------------------


def test_body_size_check() -> None:
    limits = GraphQLLimits(max_body_bytes=1000)
    check_body_size(None, limits)
    check_body_size(1000, limits)
    with pytest.raises(BodyTooLargeError, match="1001 bytes exceeds the limit of 1000") as info:
        check_body_size(1001, limits)
    assert isinstance(info.value, MeshError)
    assert info.value.status == 413
    assert (info.value.length, info.value.limit) == (1001, 1000)
