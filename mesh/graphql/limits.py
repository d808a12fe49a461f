"""Query safety for the GraphQL endpoint: size, shape, time and error-detail limits.

Everything here is independent of the DictaMesh schema; the endpoint wires it up as::

    limits = GraphQLLimits()                       # production defaults
    cache = QueryCache(schema, limits)             # one per schema, lives as long as it

    check_body_size(request.content_length, limits)  # BodyTooLargeError -> HTTP 413
    prepared = cache.prepare(query_text)           # parse (token-limited) + validate, cached
    if prepared.errors:
        return {"errors": format_errors(prepared.errors, limits)}          # HTTP 400
    result = await run_with_timeout(
        execute(schema, prepared.document, variable_values=..., ...), limits
    )
    body = {"data": result.data}
    if result.errors:
        body["errors"] = format_errors(result.errors, limits)

Resolvers raise :class:`PublicGraphQLError` for messages a client may see ("no customer with
id 9"); with ``error_detail=False`` anything else becomes ``internal error`` (and is logged).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
import traceback
from collections import OrderedDict
from collections.abc import Awaitable, Collection, Generator
from dataclasses import dataclass
from typing import Any, NamedTuple

from graphql import (
    ASTValidationRule,
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
    parse,
    specified_rules,
    validate,
)
from graphql.language import VisitorAction

from mesh.errors import MeshError, UnavailableError

__all__ = [
    "INTERNAL_ERROR_MESSAGE",
    "AliasLimitRule",
    "BodyTooLargeError",
    "DepthLimitRule",
    "GraphQLLimits",
    "NoIntrospectionRule",
    "PreparedQuery",
    "PublicGraphQLError",
    "QueryCache",
    "check_body_size",
    "error_outcome",
    "format_errors",
    "limit_rules",
    "parse_query",
    "run_with_timeout",
    "validation_rules",
]

logger = logging.getLogger(__name__)

INTERNAL_ERROR_MESSAGE = "internal error"
_INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})
_SUGGESTION = re.compile(r"\s*Did you mean\b.*$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class GraphQLLimits:
    """Limits for one GraphQL endpoint; the defaults are meant for production.

    ``max_depth`` counts nested field levels (``{ a { b } }`` has depth 2) with fragments
    expanded. Selections under ``__schema``/``__type`` are measured against
    ``max(max_depth, introspection_max_depth)`` instead, so tools' standard introspection
    query (depth 13) passes while it stays bounded. ``max_aliases`` counts every alias an
    operation would execute (an alias in a fragment spread three times counts three times);
    ``max_fields`` likewise counts every field it would execute.
    ``max_tokens`` bounds the lexical tokens (and, separately, the comments) the parser reads;
    ``max_body_bytes`` bounds the HTTP body and the query text. ``error_detail=False`` hides
    the text of unexpected exceptions and "Did you mean ...?" suggestions; it never adds
    tracebacks (with ``True`` they go to ``extensions.exception``, for development only).
    """

    max_depth: int = 10
    introspection_max_depth: int = 15
    max_aliases: int = 30
    max_fields: int = 300
    max_tokens: int = 2000
    max_body_bytes: int = 64 * 1024
    timeout_s: float = 5.0
    introspection: bool = True
    error_detail: bool = False
    parse_cache_size: int = 512

    def __post_init__(self) -> None:
        for name in ("max_depth", "max_aliases", "max_fields", "max_tokens", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"GraphQLLimits.{name} must be at least 1")
        if self.parse_cache_size < 0:
            raise ValueError("GraphQLLimits.parse_cache_size must not be negative")
        if not self.timeout_s > 0:
            raise ValueError("GraphQLLimits.timeout_s must be positive")


class PublicGraphQLError(MeshError, GraphQLError):
    """An error whose message is meant for the client, e.g. ``no customer with id 9``.

    Raise it from a resolver; :func:`format_errors` keeps its message even when
    ``error_detail`` is off (as it does an :class:`~mesh.errors.UnavailableError`'s).
    """


class BodyTooLargeError(MeshError):
    """The request body is larger than ``GraphQLLimits.max_body_bytes`` (HTTP 413)."""

    status = 413

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"request body of {length} bytes exceeds the limit of {limit} bytes")
        self.length = length
        self.limit = limit


def check_body_size(length: int | None, limits: GraphQLLimits) -> None:
    """Raise :class:`BodyTooLargeError` if ``length`` bytes exceed ``max_body_bytes``.

    ``None`` (no Content-Length, e.g. chunked) passes: the view must then read at most
    ``max_body_bytes + 1`` bytes and call this again with what it read.
    """
    if length is not None and length > limits.max_body_bytes:
        raise BodyTooLargeError(length, limits.max_body_bytes)


# -- parsing ---------------------------------------------------------------------------------


def parse_query(text: str, limits: GraphQLLimits) -> DocumentNode:
    """Parse ``text``, aborting as soon as it exceeds the token or size limits.

    Text longer than ``max_body_bytes`` characters is rejected before lexing (this also
    bounds comments, which the token count skips). The token limit is enforced by
    graphql-core's parser while it reads tokens (``parse(..., max_tokens=...)``), so an
    oversized document costs at most ``max_tokens`` tokens of work. Raises
    :class:`GraphQLError` (a syntax error for the token limit) on failure.
    """
    if len(text) > limits.max_body_bytes:
        raise GraphQLError(
            f"Document is {len(text)} characters long,"
            f" more than the limit of {limits.max_body_bytes}. Parsing aborted."
        )
    try:
        return parse(text, max_tokens=limits.max_tokens)
    except RecursionError:
        pass  # raise outside the handler so the error does not keep every frame alive
    raise GraphQLError("Document is nested too deeply. Parsing aborted.")


# -- validation rules ------------------------------------------------------------------------


class _Measure(NamedTuple):
    """Depth outside introspection, depth under ``__schema``/``__type``, alias count,
    field count (fragments expanded)."""

    depth: int
    introspection_depth: int
    aliases: int
    fields: int


_ZERO = _Measure(0, 0, 0, 0)
# A request pushed onto the trampoline: a selection set, or a fragment spread to expand.
_Request = SelectionSetNode | FragmentSpreadNode


def _measure_selection_set(
    selection_set: SelectionSetNode,
) -> Generator[_Request, _Measure, _Measure]:
    depth = introspection_depth = aliases = fields = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            child = _ZERO
            if selection.selection_set is not None:
                child = yield selection.selection_set
            below = 1 + max(child.depth, child.introspection_depth)
            if selection.name.value in _INTROSPECTION_ROOTS:
                introspection_depth = max(introspection_depth, below)
            else:
                depth = max(depth, below)
            aliases += child.aliases + (selection.alias is not None)
            fields += child.fields + 1
        else:
            if isinstance(selection, InlineFragmentNode):
                child = yield selection.selection_set
            elif isinstance(selection, FragmentSpreadNode):
                child = yield selection
            else:  # pragma: no cover - the three selection kinds are exhaustive
                continue
            depth = max(depth, child.depth)
            introspection_depth = max(introspection_depth, child.introspection_depth)
            aliases += child.aliases
            fields += child.fields
    return _Measure(depth, introspection_depth, aliases, fields)


class _Measurer:
    """Measures operations of one document, expanding fragments with memoisation.

    Runs on an explicit stack (a trampoline of generators) rather than Python recursion, so
    neither deep nesting nor long fragment chains can hit the recursion limit, and each
    fragment is measured once however often it is spread. A fragment that is (directly or
    indirectly) spread inside itself counts as empty; ``NoFragmentCyclesRule`` reports it.
    """

    def __init__(self, fragments: dict[str, FragmentDefinitionNode]) -> None:
        self._fragments = fragments
        self._memo: dict[str, _Measure] = {}

    def measure(self, selection_set: SelectionSetNode) -> _Measure:
        # Each frame: the generator and the fragment name it measures (to memoise), if any.
        stack: list[tuple[Generator[_Request, _Measure, _Measure], str | None]] = [
            (_measure_selection_set(selection_set), None)
        ]
        in_progress: set[str] = set()
        value: _Measure | None = None
        while stack:
            gen, fragment_name = stack[-1]
            try:
                request = next(gen) if value is None else gen.send(value)
            except StopIteration as done:
                stack.pop()
                value = done.value
                if fragment_name is not None:
                    in_progress.discard(fragment_name)
                    self._memo[fragment_name] = done.value
                continue
            value = None
            if isinstance(request, SelectionSetNode):
                stack.append((_measure_selection_set(request), None))
                continue
            name = request.name.value
            known = self._memo.get(name)
            if known is not None:
                value = known
            elif name in in_progress or name not in self._fragments:
                value = _ZERO
            else:
                in_progress.add(name)
                fragment = self._fragments[name]
                stack.append((_measure_selection_set(fragment.selection_set), name))
        assert value is not None
        return value


class _OperationLimitRule(ValidationRule):
    """Base for rules that check each operation's measure against ``limits``."""

    limits = GraphQLLimits()

    def __init__(self, context: ValidationContext) -> None:
        super().__init__(context)
        fragments = {
            d.name.value: d
            for d in context.document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }
        self._measurer = _Measurer(fragments)

    def enter_operation_definition(
        self, node: OperationDefinitionNode, *_args: Any
    ) -> VisitorAction:
        self.check(node, self._measurer.measure(node.selection_set))
        return self.SKIP  # the measure already covered everything below

    def check(self, node: OperationDefinitionNode, measure: _Measure) -> None:
        raise NotImplementedError

    def _name(self, node: OperationDefinitionNode) -> str:
        return f"Operation '{node.name.value}'" if node.name else "The operation"


class DepthLimitRule(_OperationLimitRule):
    """Rejects operations nested deeper than ``max_depth`` (fragments expanded)."""

    def check(self, node: OperationDefinitionNode, measure: _Measure) -> None:
        limit = self.limits.max_depth
        if measure.depth > limit:
            self.report_error(
                GraphQLError(
                    f"{self._name(node)} has depth {measure.depth},"
                    f" which exceeds the maximum depth of {limit}.",
                    node,
                )
            )
        introspection_limit = max(limit, self.limits.introspection_max_depth)
        if measure.introspection_depth > introspection_limit:
            self.report_error(
                GraphQLError(
                    f"{self._name(node)} has introspection depth {measure.introspection_depth},"
                    f" which exceeds the maximum introspection depth of {introspection_limit}.",
                    node,
                )
            )


class AliasLimitRule(_OperationLimitRule):
    """Rejects operations that would execute more than ``max_aliases`` aliased fields."""

    def check(self, node: OperationDefinitionNode, measure: _Measure) -> None:
        limit = self.limits.max_aliases
        if measure.aliases > limit:
            self.report_error(
                GraphQLError(
                    f"{self._name(node)} uses {measure.aliases} aliases,"
                    f" which exceeds the maximum of {limit}.",
                    node,
                )
            )


class FieldLimitRule(_OperationLimitRule):
    """Rejects operations that would execute more than ``max_fields`` fields.

    Besides bounding the work of execution, this keeps validation cheap: the spec's
    "overlapping fields can be merged" check is quadratic in fields of the same name
    (2,000 repeated ``id`` fields, 6 KB of query, took 4 s), and the limit rules run first.
    """

    def check(self, node: OperationDefinitionNode, measure: _Measure) -> None:
        limit = self.limits.max_fields
        if measure.fields > limit:
            self.report_error(
                GraphQLError(
                    f"{self._name(node)} selects {measure.fields} fields,"
                    f" which exceeds the maximum of {limit}.",
                    node,
                )
            )


class NoIntrospectionRule(ValidationRule):
    """Rejects ``__schema`` and ``__type`` (``__typename`` stays allowed).

    Unlike graphql-core's ``NoSchemaIntrospectionCustomRule`` it reports each introspection
    root field once, not every field below it. Names starting with ``__`` are reserved, so
    no schema field can be mistaken for one.
    """

    def enter_field(self, node: FieldNode, *_args: Any) -> VisitorAction:
        if node.name.value not in _INTROSPECTION_ROOTS:
            return None
        self.report_error(
            GraphQLError(
                "GraphQL introspection is disabled,"
                f" but the query contains the field '{node.name.value}'.",
                node,
            )
        )
        return self.SKIP


@functools.cache
def limit_rules(limits: GraphQLLimits) -> tuple[type[ASTValidationRule], ...]:
    """The DictaMesh limit rules bound to ``limits`` (without the spec's rules)."""
    attrs = {"limits": limits, "__module__": __name__}
    rules: list[type[ASTValidationRule]] = [
        type("DepthLimitRule", (DepthLimitRule,), attrs),
        type("AliasLimitRule", (AliasLimitRule,), attrs),
        type("FieldLimitRule", (FieldLimitRule,), attrs),
    ]
    if not limits.introspection:
        rules.append(NoIntrospectionRule)
    return tuple(rules)


@functools.cache
def validation_rules(limits: GraphQLLimits) -> tuple[type[ASTValidationRule], ...]:
    """``specified_rules`` plus :func:`limit_rules`: pass as ``validate(..., rules=...)``."""
    return (*specified_rules, *limit_rules(limits))


# -- parse + validate cache ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PreparedQuery:
    """A parsed and validated query. ``document`` is None when parsing failed.

    Execute only when ``errors`` is empty; both are shared between requests: do not mutate.
    """

    document: DocumentNode | None
    errors: tuple[GraphQLError, ...]


class QueryCache:
    """An LRU of parsed and validated queries for one schema, keyed by query text.

    At most ``limits.parse_cache_size`` entries (0 disables caching). Failed queries are
    cached too, so repeating a rejected query is also cheap. Not thread-safe (asyncio only).
    """

    def __init__(self, schema: GraphQLSchema, limits: GraphQLLimits) -> None:
        self.schema = schema
        self.limits = limits
        self._entries: OrderedDict[str, PreparedQuery] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def prepare(self, text: str) -> PreparedQuery:
        """Return the parsed document and validation errors of ``text``."""
        entry = self._entries.get(text)
        if entry is not None:
            self.hits += 1
            self._entries.move_to_end(text)
            return entry
        self.misses += 1
        entry = self._prepare(text)
        if self.limits.parse_cache_size > 0:
            self._entries[text] = entry
            if len(self._entries) > self.limits.parse_cache_size:
                self._entries.popitem(last=False)
        return entry

    def _prepare(self, text: str) -> PreparedQuery:
        """Parse and validate (spec rules only for documents within the limits)."""
        try:
            document = parse_query(text, self.limits)
        except GraphQLError as error:
            return PreparedQuery(None, (error,))
        # The limit rules first: they are cheap and iterative, and they keep documents that
        # are too deep or too wide away from the spec rules (some of which recurse).
        errors = validate(self.schema, document, rules=limit_rules(self.limits))
        if not errors:
            errors = validate(self.schema, document, rules=specified_rules)
        return PreparedQuery(document, tuple(errors))


# -- execution timeout -----------------------------------------------------------------------


async def run_with_timeout(
    result: Awaitable[ExecutionResult] | ExecutionResult, limits: GraphQLLimits
) -> ExecutionResult:
    """Await ``result`` (e.g. what ``graphql.execute`` returned) for at most ``timeout_s``.

    On timeout the execution is cancelled (with every pending async resolver) and an
    :class:`ExecutionResult` with no data and one error is returned. A synchronous resolver
    that blocks the event loop cannot be interrupted; keep resolvers async.
    """
    if not inspect.isawaitable(result):
        return result
    try:
        async with asyncio.timeout(limits.timeout_s):
            return await result
    except TimeoutError:
        message = f"query took longer than {limits.timeout_s:g} s and was cancelled"
        return ExecutionResult(data=None, errors=[GraphQLError(message)])


# -- error formatting ------------------------------------------------------------------------


def _is_public(error: GraphQLError) -> bool:
    """True for graphql's own errors (syntax, validation, limits, variable values that do
    not fit their type), PublicGraphQLError and UnavailableError; false when an unexpected
    exception of a resolver is the cause."""
    if isinstance(error, PublicGraphQLError):
        return True
    original = error.original_error
    return original is None or isinstance(original, GraphQLError | UnavailableError)


def error_outcome(errors: Collection[GraphQLError]) -> str:
    """``server_error`` when the fleet failed the request (an unexpected exception, or it
    could not answer right now), else ``client_error`` (the request was wrong or not
    allowed): what the availability SLO counts."""
    for error in errors:
        if isinstance(error.original_error, UnavailableError) or not _is_public(error):
            return "server_error"
    return "client_error"


def format_errors(errors: Collection[GraphQLError], limits: GraphQLLimits) -> list[dict[str, Any]]:
    """JSON-able error dicts for a response's ``errors`` list.

    With ``error_detail=False`` an error caused by an unexpected exception gets the message
    ``internal error`` and no extensions (the exception is logged here instead), and
    "Did you mean ...?" suggestions are cut from the rest. With ``error_detail=True``
    messages are kept and an unexpected exception's type and traceback are added under
    ``extensions.exception``. An error because the fleet could not answer right now has
    ``extensions: {"code": "UNAVAILABLE", "retryAfter": seconds}``.
    """
    formatted: list[dict[str, Any]] = []
    for error in errors:
        entry: dict[str, Any] = dict(error.formatted)
        original = error.original_error
        public = _is_public(error)
        if limits.error_detail:
            if not public and original is not None:
                extensions: dict[str, Any] = dict(error.extensions or {})
                extensions["exception"] = {
                    "type": type(original).__name__,
                    "stacktrace": traceback.format_exception(original),
                }
                entry["extensions"] = extensions
        elif public:
            entry["message"] = _SUGGESTION.sub("", error.message)
        else:
            logger.error(
                "GraphQL execution failed at %s",
                ".".join(map(str, error.path or ())) or "<root>",
                exc_info=original,
            )
            entry["message"] = INTERNAL_ERROR_MESSAGE
            entry.pop("extensions", None)
        if isinstance(original, UnavailableError):
            # What REST says with 503 + Retry-After, for clients that retry.
            entry["extensions"] = {
                **entry.get("extensions", {}),
                "code": "UNAVAILABLE",
                "retryAfter": original.retry_after or 1,
            }
        formatted.append(entry)
    return formatted
