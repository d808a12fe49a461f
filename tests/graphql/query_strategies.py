"""Hypothesis strategies for GraphQL queries over any schema: selections with aliases,
named and inline fragments, ``@skip``/``@include`` (literal or variable), ``__typename``
and nested objects, for comparing two executors on the same queries."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import GraphQLObjectType, GraphQLSchema, get_named_type, is_leaf_type
from hypothesis import strategies as st


@dataclass
class _Query:
    """What one query's drawing collects besides its selection."""

    aliases: itertools.count[int] = field(default_factory=itertools.count)
    fragments: list[str] = field(default_factory=list)
    variables: dict[str, bool] = field(default_factory=dict)


def _directive(draw: st.DrawFn, query: _Query) -> str:
    kind = draw(st.sampled_from(["", "", "", "skip", "include"]))
    if not kind:
        return ""
    if draw(st.booleans()):
        value = "true" if draw(st.booleans()) else "false"
    else:
        name = f"v{len(query.variables)}"
        query.variables[name] = draw(st.booleans())
        value = f"${name}"
    return f" @{kind}(if: {value})"


def _selection(
    draw: st.DrawFn,
    query: _Query,
    parent: GraphQLObjectType,
    depth: int,
    roots: Mapping[str, st.SearchStrategy[str]] | None = None,
) -> str:
    """A selection set on ``parent`` (root fields with ``roots``' arguments)."""
    names = sorted(roots if roots is not None else parent.fields)
    parts: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        what = draw(st.sampled_from(["field"] * 6 + ["typename", "inline", "spread"]))
        if what == "typename":
            parts.append("__typename" + _directive(draw, query))
            continue
        if what in ("inline", "spread") and depth > 0:
            inner = _selection(draw, query, parent, depth - 1, roots)
            if what == "inline":
                condition = f" on {parent.name}" if draw(st.booleans()) else ""
                parts.append(f"...{condition}{_directive(draw, query)} {{ {inner} }}")
            else:
                name = f"F{len(query.fragments)}"
                query.fragments.append(f"fragment {name} on {parent.name} {{ {inner} }}")
                parts.append(f"...{name}{_directive(draw, query)}")
            continue
        name = draw(st.sampled_from(names))
        target = get_named_type(parent.fields[name].type)
        sub = ""
        if not is_leaf_type(target):
            if depth == 0 or not isinstance(target, GraphQLObjectType):
                continue
            sub = " { " + _selection(draw, query, target, depth - 1) + " }"
        args = draw(roots[name]) if roots is not None else ""
        # Fields with arguments are aliased: two without aliases but with different
        # arguments would not validate.
        alias = f"a{next(query.aliases)}: " if args or draw(st.booleans()) else ""
        parts.append(f"{alias}{name}{args}{_directive(draw, query)}{sub}")
    return " ".join(parts) or "__typename"


@st.composite
def queries(
    draw: st.DrawFn,
    schema: GraphQLSchema,
    roots: Mapping[str, st.SearchStrategy[str]],
    depth: int = 3,
) -> tuple[str, dict[str, Any]]:
    """``(query text, variables)``: an operation selecting ``roots`` (root field name to
    its arguments' text, e.g. ``(id: "1")``) and below them up to ``depth`` levels."""
    assert schema.query_type is not None
    query = _Query()
    selection = _selection(draw, query, schema.query_type, depth, roots)
    declared = ", ".join(f"${name}: Boolean!" for name in query.variables)
    head = f"query Q({declared})" if declared else "query Q"
    text = " ".join([f"{head} {{ {selection} }}", *query.fragments])
    return text, dict(query.variables)
