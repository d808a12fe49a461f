"""Compiling a validated query into a :class:`Plan`: what to resolve, under which response
keys, and how to complete each value, worked out once per (document, operation, values of
the variables ``@skip``/``@include`` read) instead of once per field per request.

Selections are collected with graphql-core's own ``collect_fields``/``collect_sub_fields``,
so aliases, merged fields, fragments, inline fragments and ``@skip``/``@include`` mean here
exactly what they mean to graphql-core's executor. A plan keeps each field's definition,
resolver and type; :mod:`.run` walks it over the records the request's loader returns.

Only what the plan can complete exactly as graphql-core would is planned: query operations
whose root fields are the domain's entity and list fields (or ``__typename``), selecting
object, scalar and enum types. Anything else (introspection, mutations, the saga and
federation fields, interfaces and unions, object types with ``is_type_of``) has no plan
and goes to graphql-core's general executor.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DirectiveNode,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLField,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLString,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    Visitor,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
    visit,
)
from graphql.execution.collect_fields import collect_fields, collect_sub_fields
from graphql.execution.execute import default_field_resolver
from graphql.pyutils import Path

from mesh.graphql.schema import _Forward, _id_resolver, _Reverse, _Root

__all__ = [
    "ARGS",
    "BY_ID",
    "FORWARD",
    "ID",
    "LEAF",
    "LIST",
    "OBJECT",
    "RESOLVE",
    "REVERSE",
    "STATE",
    "TYPENAME",
    "Completion",
    "FieldPlan",
    "Plan",
    "Planner",
    "Selection",
]

LEAF, OBJECT, LIST = 0, 1, 2
"""The kinds of :class:`Completion`."""
RESOLVE, ARGS, TYPENAME, FORWARD, REVERSE, BY_ID, STATE, ID = range(8)
"""How a :class:`FieldPlan` is resolved: by calling its resolver (without arguments, or
with them), as ``__typename``, by the executor reading its keys with the round's other
reads (forward references, reverse relations, root fields by id), or as the executor
reads a plain field of the record (what its resolver would return) or its id."""

_MAX_DOCUMENTS = 1024
"""Documents with plans kept at most (the query cache in front keeps 512)."""
_MAX_PLANS_PER_DOCUMENT = 16
"""Plans per document at most: one per operation and combination of directive values."""

# Scalars whose serialize returns a value of this exact type unchanged (graphql-core's
# String, ID and Boolean; Int too within 32 bits, Float when finite): the executor skips
# the call for those. Every other leaf (enums, graphene's BigInt and JSONString) is
# serialized by its own function, as graphql-core does.
_SAME: dict[Any, type] = {
    GraphQLString: str,
    GraphQLID: str,
    GraphQLBoolean: bool,
    GraphQLInt: int,
    GraphQLFloat: float,
}


class NotPlain:
    """No value is of this type: :attr:`FieldPlan.same` of fields that are no plain leaf."""


class UnsupportedError(Exception):
    """The query needs something the plan does not do: graphql-core executes it."""


@dataclass(frozen=True, slots=True, eq=False)
class Completion:
    """How a resolved value completes at one level of a field's type (``[Invoice!]!`` has
    two: the non-null list, then its non-null items)."""

    kind: int
    """:data:`LEAF`, :data:`OBJECT` or :data:`LIST`."""
    nonnull: bool
    leaf: GraphQLLeafType | None = None
    same: type | None = None
    """Leaves: values of exactly this type are their own serialization."""
    selection: Selection | None = None
    """Objects: the selection of their fields."""
    item: Completion | None = None
    """Lists: how each item completes."""


@dataclass(slots=True, eq=False)
class FieldPlan:
    """One response key of a selection: the field it resolves and how it completes."""

    key: str
    """The response key (the alias, else the field name)."""
    name: str
    nodes: list[FieldNode]
    """Every field node merged under :attr:`key` (graphql-core's ``field_nodes``)."""
    parent: GraphQLObjectType
    index: int
    """The field's position in :attr:`Plan.fields` (its per-request info and arguments)."""
    kind: int = RESOLVE
    """:data:`RESOLVE`, :data:`ARGS`, :data:`TYPENAME`, :data:`FORWARD`, :data:`REVERSE` or
    :data:`BY_ID`."""
    definition: GraphQLField | None = None
    """``None`` for ``__typename``."""
    resolve: Callable[..., Any] = default_field_resolver
    forward: _Forward | None = None
    """The resolver of a forward reference: the executor reads its key (its record)."""
    reverse: _Reverse | None = None
    """The resolver of a reverse relation: the executor reads its ids, then its members."""
    by_id: _Root | None = None
    """The resolver of a root field by id: the executor reads its key."""
    state: str = ""
    """The record's state field a plain field reads (:data:`STATE`)."""
    has_args: bool = False
    same: type = NotPlain
    """A leaf whose values of exactly this type are their own serialization (``str`` for
    ``String`` and ``ID``, ``bool`` for ``Boolean``): stored as they are."""
    completion: Completion = field(default_factory=lambda: Completion(LEAF, False))
    path: Path | None = None
    """The path resolvers see in ``info.path``: response keys only, no list indices (no
    resolver of this schema reads it)."""


@dataclass(slots=True, eq=False)
class Selection:
    """The fields selected on one object type, in response order."""

    type_name: str
    fields: list[FieldPlan]


@dataclass(slots=True, eq=False)
class Plan:
    """A compiled operation: its root selection and every field of it by index."""

    schema: GraphQLSchema
    operation: OperationDefinitionNode
    fragments: dict[str, FragmentDefinitionNode]
    root: Selection
    fields: list[FieldPlan]


@dataclass(slots=True, eq=False)
class _Document:
    """What one document's plans share: its operations, fragments and the variables its
    ``@skip``/``@include`` directives read."""

    ref: weakref.ReferenceType[DocumentNode]
    operations: list[OperationDefinitionNode]
    fragments: dict[str, FragmentDefinitionNode]
    directive_variables: tuple[str, ...]
    plans: dict[tuple[Any, ...], Plan | None] = field(default_factory=dict)


class _DirectiveVariables(Visitor):
    """Collects the variables any directive argument reads."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def enter_directive(self, node: DirectiveNode, *_args: Any) -> None:
        for argument in node.arguments:
            if isinstance(argument.value, VariableNode):
                self.names.add(argument.value.name.value)


class Planner:
    """Plans of one schema's queries, cached per document (as long as it lives).

    ``root_fields`` are the query fields a plan may start from: those whose resolvers the
    executor may call as graphql-core would (entity by id, entity lists).
    """

    def __init__(self, schema: GraphQLSchema, root_fields: Collection[str]) -> None:
        self.schema = schema
        self.root_fields = frozenset(root_fields)
        self._documents: dict[int, _Document] = {}
        self.compiled = 0
        """Plans compiled so far (a plan is compiled once per document and directives)."""

    def operation(
        self, document: DocumentNode, operation_name: str | None
    ) -> tuple[_Document, OperationDefinitionNode] | None:
        """The document's entry and the operation to run; ``None`` when graphql-core would
        refuse the choice (no operation, an unknown name, several without a name): its
        general executor then answers the same errors."""
        entry = self._document(document)
        chosen: OperationDefinitionNode | None = None
        for operation in entry.operations:
            if operation_name is None:
                if chosen is not None:
                    return None
                chosen = operation
            elif operation.name is not None and operation.name.value == operation_name:
                chosen = operation
        return None if chosen is None else (entry, chosen)

    def plan(
        self, entry: _Document, operation: OperationDefinitionNode, variables: dict[str, Any]
    ) -> Plan | None:
        """The plan of ``operation`` for these (coerced) ``variables``; ``None`` when it
        needs graphql-core's general executor."""
        directives = tuple(variables.get(name) for name in entry.directive_variables)
        key = (id(operation), directives)
        try:
            return entry.plans[key]
        except KeyError:
            pass
        except TypeError:  # a directive argument that is no plain value: not planned
            return None
        try:
            plan: Plan | None = _Compiler(self, entry, operation, variables).compile()
        except UnsupportedError:
            plan = None
        self.compiled += 1
        if len(entry.plans) >= _MAX_PLANS_PER_DOCUMENT:
            entry.plans.pop(next(iter(entry.plans)))
        entry.plans[key] = plan
        return plan

    def _document(self, document: DocumentNode) -> _Document:
        key = id(document)
        entry = self._documents.get(key)
        if entry is not None and entry.ref() is document:
            return entry
        operations, fragments = [], {}
        for definition in document.definitions:
            if isinstance(definition, OperationDefinitionNode):
                operations.append(definition)
            elif isinstance(definition, FragmentDefinitionNode):
                fragments[definition.name.value] = definition
        found = _DirectiveVariables()
        visit(document, found)
        documents = self._documents

        def forget(ref: weakref.ReferenceType[DocumentNode]) -> None:
            # The document is gone (evicted from the query cache): so are its plans.
            known = documents.get(key)
            if known is not None and known.ref is ref:
                del documents[key]

        entry = _Document(weakref.ref(document, forget), operations, fragments,
                          tuple(sorted(found.names)))  # fmt: skip
        if len(documents) >= _MAX_DOCUMENTS:
            documents.pop(next(iter(documents)))
        documents[key] = entry
        return entry


class _Compiler:
    """Compiles one operation for one set of directive values."""

    def __init__(
        self,
        planner: Planner,
        entry: _Document,
        operation: OperationDefinitionNode,
        variables: dict[str, Any],
    ) -> None:
        self.planner = planner
        self.schema = planner.schema
        self.entry = entry
        self.operation = operation
        self.variables = variables
        self.fields: list[FieldPlan] = []

    def compile(self) -> Plan:
        if self.operation.operation != OperationType.QUERY:
            raise UnsupportedError("only queries are planned")
        root_type = self.schema.query_type
        if root_type is None:
            raise UnsupportedError("no query type")
        selected = collect_fields(
            self.schema, self.entry.fragments, self.variables, root_type,
            self.operation.selection_set,
        )  # fmt: skip
        for nodes in selected.values():
            name = nodes[0].name.value
            if name != "__typename" and name not in self.planner.root_fields:
                raise UnsupportedError(f"root field {name}")
        root = self._selection(root_type, selected, None)
        return Plan(self.schema, self.operation, self.entry.fragments, root, self.fields)

    def _selection(
        self, parent: GraphQLObjectType, selected: dict[str, list[FieldNode]], path: Path | None
    ) -> Selection:
        if parent.is_type_of is not None:
            raise UnsupportedError(f"{parent.name} checks its values (is_type_of)")
        plans = []
        for key, nodes in selected.items():
            name = nodes[0].name.value
            plan = FieldPlan(key, name, nodes, parent, len(self.fields),
                             path=Path(path, key, parent.name))  # fmt: skip
            self.fields.append(plan)
            plans.append(plan)
            if name == "__typename":
                plan.kind = TYPENAME
                plan.completion = Completion(LEAF, True, GraphQLString, str)
                continue
            definition = parent.fields.get(name)
            if definition is None:  # e.g. __schema, __type: introspection is not planned
                raise UnsupportedError(f"field {parent.name}.{name}")
            plan.definition = definition
            resolve = plan.resolve = definition.resolve or default_field_resolver
            plan.has_args = bool(definition.args)
            # The resolvers whose reads the executor makes itself (what they would fetch,
            # with the round's other keys), by their classes in mesh.graphql.schema.
            if isinstance(resolve, _Forward):
                plan.kind, plan.forward = FORWARD, resolve
            elif isinstance(resolve, _Reverse):
                plan.kind, plan.reverse = REVERSE, resolve
            elif isinstance(resolve, _Root) and set(definition.args) == {"id"}:
                plan.kind, plan.by_id = BY_ID, resolve
            elif plan.has_args:
                plan.kind = ARGS
            elif isinstance(state := getattr(resolve, "state_field", None), str):
                plan.kind, plan.state = STATE, state  # what _state_resolver reads
            elif resolve is _id_resolver:
                plan.kind = ID
            plan.completion = completion = self._completion(definition.type, nodes, plan.path)
            if completion.same in (str, bool):  # Int and Float have ranges to check
                plan.same = completion.same
        return Selection(parent.name, plans)

    def _completion(
        self, of: GraphQLOutputType, nodes: list[FieldNode], path: Path | None
    ) -> Completion:
        nonnull = is_non_null_type(of)
        if isinstance(of, GraphQLNonNull):
            of = of.of_type
        if is_list_type(of):
            assert isinstance(of, GraphQLList)
            return Completion(LIST, nonnull, item=self._completion(of.of_type, nodes, path))
        if is_leaf_type(of):
            assert isinstance(of, GraphQLScalarType | GraphQLEnumType)
            return Completion(LEAF, nonnull, of, _SAME.get(of))
        if is_object_type(of):
            assert isinstance(of, GraphQLObjectType)
            selected = collect_sub_fields(
                self.schema, self.entry.fragments, self.variables, of, nodes
            )
            return Completion(OBJECT, nonnull, selection=self._selection(of, selected, path))
        raise UnsupportedError(f"abstract type {of}")  # interfaces and unions
