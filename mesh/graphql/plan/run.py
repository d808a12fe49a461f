"""Walking a :class:`~.compile.Plan` over the records the request's loader returns.

Values complete exactly as graphql-core completes them (its ``complete_value``): non-null
checks, lists, leaf serialization with the type's own ``serialize``, errors located with
the field nodes and path, the null propagated to the nearest nullable parent (and what
was still to come under it left alone, as graphql-core leaves it), errors sorted as its
``build_response`` sorts them. What is cheaper:

* no per-field ``ResolveInfo``, ``Path``, argument coercion and awaitable checks: one info
  per planned field per request, paths built only for errors, plain leaf values stored as
  they are (a ``str`` is its own ``String``);
* no future, coroutine, task or ``gather`` per value still being read: the reads of the
  relation fields (forward references, reverse relations) and root fields by id of one
  round are one ``loader.fetch`` of all their keys, made in the same tick as
  graphql-core's resolvers would make theirs one by one, so the loader makes the same
  batches (one per level and owner). Once they are read each field takes its values the
  way its resolver would, or, when some key of the round failed, asks the loader for its
  own keys again (read already), so only the fields whose keys failed fail.

Every other field is resolved by calling its resolver as graphql-core calls it
(``resolve(source, info, **args)``), so field policies, the loader's tenant, tracing and
the response cache's recorder behave the same. A resolver's awaitable (a list field's
coroutine) is started with the round, as graphql-core's ``gather`` starts it; when one
fails and nulls the whole answer, the execution ends at once, as graphql-core's does.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
from collections.abc import Callable
from types import NoneType
from typing import Any

from graphql import ExecutionResult, GraphQLError, GraphQLResolveInfo, located_error
from graphql.execution.values import get_argument_values
from graphql.pyutils import Undefined, is_awaitable, is_iterable
from graphql.pyutils import inspect as shown

from mesh.graphql.loader import Loader
from mesh.graphql.plan.compile import (
    ARGS,
    BY_ID,
    FORWARD,
    ID,
    LEAF,
    OBJECT,
    RESOLVE,
    REVERSE,
    STATE,
    Completion,
    FieldPlan,
    Plan,
    Selection,
)
from mesh.graphql.reads import Key
from mesh.graphql.schema import _first, _live_first, _present

__all__ = ["Execution"]

_PLAIN = frozenset({str, int, float, bool, NoneType, dict, list})
"""Types a resolved value is completed as is, without asking whether it is an awaitable
or an exception."""
_MIN_INT, _MAX_INT = -(2**31), 2**31 - 1

# What a read of the round is for: a forward reference's record, a reverse relation's
# member ids, then its members, a root field's record.
_FORWARD, _IDS, _MEMBERS, _ROOT = 0, 1, 2, 3
_THEN: dict[int, Callable[[list[Any]], Any]] = {
    _FORWARD: _live_first,
    _IDS: _first,
    _MEMBERS: _present,
    _ROOT: _live_first,
}

Slot = tuple[Any, "str | int", bool, Any]
"""Where a completed object or list sits: ``(container, key, nullable, parent slot)``,
``container[key]`` being the position and ``parent`` the slot of the object or list
holding it (``None``: the root). Tuples: one is made per object."""

# A read of the round: what it is for, the field, its keys' span in the round's keys,
# where the value goes (``out[key]`` in the object at ``slot``).
_Read = tuple[int, FieldPlan, int, int, dict[str, Any], str, "Slot | None"]
# An awaitable of a resolver (a future, or a coroutine started with its round), the field,
# how it completes (the field's completion, or its list's items') and where it goes.
_Waiting = tuple[Any, FieldPlan, Completion, Any, "str | int", "Slot | None"]


class _NullFieldError(Exception):
    """A non-null position completed to null: its error is recorded, and the nearest
    nullable position above it becomes null (the exception carries that upwards)."""


def _values(found: list[Any]) -> list[Any]:
    return found


def _sort_key(error: GraphQLError) -> Any:
    # graphql-core's build_response order, so both executors list errors alike.
    return (error.locations or [], error.path or [], error.message)


class Execution:
    """One request's run of a plan (build one per request, then await :meth:`run`):
    ``loader`` reads its keys and is the resolvers' context (``info.context``), as under
    graphql-core; ``variables`` are the coerced variable values."""

    def __init__(self, plan: Plan, loader: Loader, variables: dict[str, Any]) -> None:
        self.plan = plan
        self.loader = loader
        self.errors: list[GraphQLError] = []
        self._keys: list[Key] = []
        """The keys the round's reads need, in the order the fields asked for them."""
        self._reads: list[_Read] = []
        self._waiting: list[_Waiting] = []
        self._tasks: list[asyncio.Future[Any]] = []
        self._root_null = False
        self._infos: list[GraphQLResolveInfo | None] = []
        self._args: list[dict[str, Any] | Exception | None] = []
        for f in plan.fields:
            if f.definition is None or f.kind in (STATE, ID, FORWARD, REVERSE):
                # Read by the executor itself: no resolver call, no info.
                self._infos.append(None)
                self._args.append(None)
                continue
            assert f.path is not None
            self._infos.append(GraphQLResolveInfo(
                f.name, f.nodes, f.definition.type, f.parent, f.path, plan.schema,
                plan.fragments, None, plan.operation, variables, loader, is_awaitable,
            ))  # fmt: skip
            args: dict[str, Any] | Exception | None = None
            if f.has_args:
                try:
                    args = get_argument_values(f.definition, f.nodes[0], variables)
                except Exception as exc:  # failed as graphql-core fails it: per field
                    args = exc
            self._args.append(args)

    async def run(self) -> ExecutionResult:
        """Execute the plan: the result graphql-core's ``execute`` would return."""
        try:
            data: dict[str, Any] | None = self._object(self.plan.root, None, None)
        except _NullFieldError:
            data = None
        try:
            while (self._reads or self._waiting) and not self._root_null:
                await self._round()
        finally:
            for task in self._tasks:  # cancelled (timeout): so are the resolvers' tasks
                if not task.done():
                    task.cancel()
            for entry in self._waiting:  # never started
                if inspect.iscoroutine(entry[0]):
                    entry[0].close()
        if self._root_null:
            data = None
        if not self.errors:
            return ExecutionResult(data, None)
        self.errors.sort(key=_sort_key)
        return ExecutionResult(data, self.errors)

    async def _round(self) -> None:
        """Read what the last round's fields asked for, then complete them (which asks
        for the next round's reads)."""
        reads, keys, waiting = self._reads, self._keys, self._waiting
        self._reads, self._keys, self._waiting = [], [], []
        values: Any = None
        unique: list[Key] = []
        if reads:
            # One fetch of every key of the round: the same keys in the same tick as the
            # fields' resolvers would fetch them, so the loader makes the same batches
            # (each key once: many items name the same product).
            unique = list(dict.fromkeys(keys))
            values = self.loader.fetch(unique, _values)
        started: list[tuple[asyncio.Future[Any], _Waiting]] = []
        for entry in waiting:
            awaitable = entry[0]
            if self.errors and not self._alive(entry[3], entry[5]):
                # Under a position nulled since: graphql-core never awaits it.
                if inspect.iscoroutine(awaitable):
                    awaitable.close()
                continue
            if not isinstance(awaitable, asyncio.Future):
                # Started now, as graphql-core's gather starts it after the same tick.
                awaitable = asyncio.ensure_future(awaitable)
                self._tasks.append(awaitable)
            started.append((awaitable, entry))
        if not started:
            if isinstance(values, asyncio.Future) and not values.done():
                # The common round: one fetch to wait for, awaited as is (one wake-up).
                with contextlib.suppress(Exception):
                    await values
            self._read_all(reads, keys, unique, values)
            return
        resumed: set[int] = set()
        pending: set[asyncio.Future[Any]] = {future for future, _ in started}
        if isinstance(values, asyncio.Future):
            pending.add(values)
        while True:
            # A resolver that failed may null the whole answer: graphql-core answers at
            # once then, without waiting for the others (cancelled; their reads go on).
            for n, (future, entry) in enumerate(started):
                if n in resumed or not future.done() or future.cancelled():
                    continue
                if future.exception() is not None:
                    resumed.add(n)
                    if self._alive(entry[3], entry[5]):
                        self._resume(future, entry)
            if self._root_null:
                return
            pending = {future for future in pending if not future.done()}
            if not pending:
                break
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for n, (future, entry) in enumerate(started):
            if n not in resumed and (not self.errors or self._alive(entry[3], entry[5])):
                self._resume(future, entry)
        self._read_all(reads, keys, unique, values)

    def _read_all(
        self, reads: list[_Read], keys: list[Key], unique: list[Key], values: Any
    ) -> None:
        """Complete the round's reads with the values of their keys (``values``: those of
        ``unique``, or the fetch's future)."""
        found: dict[Key, Any] | None = None
        if isinstance(values, asyncio.Future):
            # Failed when any key did: each read then asks for its own keys again (read
            # now), and only those whose keys failed fail.
            values = None if values.exception() is not None else values.result()
        if values is not None:
            found = dict(zip(unique, values, strict=True))
        for read in reads:
            # Only an error nulls a position: without one, every read is still wanted.
            if not self.errors or self._alive(read[4], read[6]):
                self._read(read, keys, found)

    def _alive(self, container: Any, slot: Slot | None) -> bool:
        """Whether ``container`` (an object or list at ``slot``) is still part of the
        answer: a non-null error since may have nulled it or a position above it."""
        while slot is not None:
            holder, key, _, parent = slot
            try:
                if holder[key] is not container:
                    return False
            except LookupError:  # never placed: its completion failed on a non-null error
                return False
            container, slot = holder, parent
        return not self._root_null

    # -- resolving ---------------------------------------------------------------------

    def _object(self, selection: Selection, source: Any, slot: Slot | None) -> dict[str, Any]:
        """The completed fields of one object; :class:`_NullFieldError` when a non-null one
        is null."""
        out: dict[str, Any] = {}
        infos, keys, reads = self._infos, self._keys, self._reads
        for f in selection.fields:
            key, kind = f.key, f.kind
            try:
                if kind == STATE:
                    value = source["state"].get(f.state)  # what its resolver returns
                elif kind == RESOLVE:
                    value = f.resolve(source, infos[f.index])
                elif kind == ID:
                    value = source["id"]
                elif kind == FORWARD:
                    assert f.forward is not None
                    ref = f.forward.key(source)
                    if ref is not None:
                        out[key] = None  # set when read; placed now to keep the key order
                        at = len(keys)
                        keys.append(ref)
                        reads.append((_FORWARD, f, at, at + 1, out, key, slot))
                        continue
                    value = None  # a reference to nothing
                elif kind == REVERSE:
                    assert f.reverse is not None
                    out[key] = None
                    at = len(keys)
                    keys.append(f.reverse.key(source))
                    reads.append((_IDS, f, at, at + 1, out, key, slot))
                    continue
                elif kind in (ARGS, BY_ID):
                    given = self._args[f.index]
                    if isinstance(given, Exception):
                        raise given
                    assert given is not None
                    if kind == BY_ID:
                        assert f.by_id is not None
                        ref = f.by_id.key(given["id"])
                        out[key] = None
                        self._ask(_ROOT, f, ref, out, slot)
                        continue
                    value = f.resolve(source, infos[f.index], **given)
                else:
                    out[key] = selection.type_name  # __typename
                    continue
            except Exception as exc:
                self._failed(f, f.completion, exc, key, slot)
                out[key] = None
                continue
            of = type(value)
            if of is f.same:  # a plain leaf value: its own serialization
                out[key] = value
                continue
            if of not in _PLAIN and is_awaitable(value):
                out[key] = None  # set when awaited; placed now to keep the key order
                self._wait(value, f, f.completion, out, key, slot)
                continue
            out[key] = self._complete(f, f.completion, value, out, key, slot)
        return out

    def _ask(
        self, what: int, f: FieldPlan, key: Key, out: dict[str, Any], slot: Slot | None
    ) -> None:
        """Read ``key`` in this round for field ``f`` (what its resolver would fetch)."""
        start = len(self._keys)
        self._keys.append(key)
        self._reads.append((what, f, start, start + 1, out, f.key, slot))

    def _read(self, read: _Read, keys: list[Key], found: dict[Key, Any] | None) -> None:
        """Complete a field whose keys were read in the round (or read its members)."""
        what, f, start, end, out, key, slot = read
        value: Any
        try:
            if found is None:  # some key of the round failed: were this field's?
                value = self.loader.fetch(keys[start:end], _THEN[what])
                if isinstance(value, asyncio.Future):
                    # Read already, so settled: its own keys' error, as its resolver gets.
                    value = value.result()
            elif what == _IDS:  # _THEN's functions, inlined (live: present, not deleted)
                value = found[keys[start]]
            elif what == _MEMBERS:
                value = [
                    r
                    for k in keys[start:end]
                    if (r := found[k]) is not None and not r.get("deleted")
                ]
            else:
                value = found[keys[start]]
                if value is not None and value.get("deleted"):
                    value = None
            if what == _ROOT:
                assert f.by_id is not None
                value = f.by_id.found(keys[start], value)
            elif what == _IDS:
                assert f.reverse is not None
                members = [Key("entity", f.reverse.child, i) for i in value]
                if members:
                    start = len(self._keys)
                    self._keys.extend(members)
                    self._reads.append((_MEMBERS, f, start, start + len(members), out, key, slot))
                    return
                value = []
        except Exception as exc:
            try:
                self._failed(f, f.completion, exc, key, slot)
            except _NullFieldError:
                self._null(slot)
            return
        try:
            c = f.completion
            if type(value) is dict and c.selection is not None:
                # A record for an object field: what _complete would do with it.
                out[key] = self._object(c.selection, value, (out, key, not c.nonnull, slot))
            else:
                out[key] = self._complete(f, c, value, out, key, slot)
        except _NullFieldError:
            if f.completion.nonnull:
                self._null(slot)
            else:
                out[key] = None

    def _wait(
        self, value: Any, f: FieldPlan, c: Completion, container: Any, key: str | int,
        parent: Slot | None,
    ) -> None:  # fmt: skip
        """Complete ``value``, a resolver's awaitable, when it is done (next round)."""
        self._waiting.append((value, f, c, container, key, parent))

    def _resume(self, future: asyncio.Future[Any], entry: _Waiting) -> None:
        """Complete a resolver's awaited value."""
        _, f, c, container, key, parent = entry
        try:
            value = future.result()
        except Exception as exc:
            try:
                self._failed(f, c, exc, key, parent)
            except _NullFieldError:
                self._null(parent)
            return
        try:
            container[key] = self._complete(f, c, value, container, key, parent)
        except _NullFieldError:
            self._null(parent)

    # -- completing --------------------------------------------------------------------

    def _complete(
        self, f: FieldPlan, c: Completion, value: Any, container: Any, key: str | int,
        parent: Slot | None,
    ) -> Any:  # fmt: skip
        """``value`` completed for the position ``container[key]`` (graphql-core's
        ``complete_value``); :class:`_NullFieldError` when it is null but may not be."""
        try:
            if value is None or value is Undefined:
                if c.nonnull:
                    raise TypeError(
                        f"Cannot return null for non-nullable field {f.parent.name}.{f.name}."
                    )
                return None
            if type(value) not in _PLAIN and isinstance(value, Exception):
                raise value
            kind = c.kind
            if kind == LEAF:
                same = c.same
                if type(value) is same:
                    plain: Any = value  # its own serialization, within Int and Float's range
                    if same is int:
                        if _MIN_INT <= plain <= _MAX_INT:
                            return plain
                    elif same is not float or math.isfinite(plain):
                        return plain
                assert c.leaf is not None
                serialized = c.leaf.serialize(value)
                if serialized is Undefined or serialized is None:
                    raise TypeError(
                        f"Expected `{shown(c.leaf)}.serialize({shown(value)})`"
                        f" to return non-nullable value, returned: {shown(serialized)}"
                    )
                return serialized
            if kind == OBJECT:
                assert c.selection is not None
                return self._object(c.selection, value, (container, key, not c.nonnull, parent))
            return self._list(f, c, value, container, key, parent)
        except _NullFieldError:
            if c.nonnull:
                raise
            return None
        except Exception as exc:
            self._failed(f, c, exc, key, parent)
            return None

    def _list(
        self, f: FieldPlan, c: Completion, value: Any, container: Any, key: str | int,
        parent: Slot | None,
    ) -> list[Any]:  # fmt: skip
        if type(value) is not list and not is_iterable(value):
            raise GraphQLError(
                f"Expected Iterable, but did not find one for field '{f.parent.name}.{f.name}'."
            )
        item = c.item
        assert item is not None
        slot = (container, key, not c.nonnull, parent)
        out: list[Any] = []
        append = out.append
        if item.kind == OBJECT and item.selection is not None:
            # A list of objects (a relation's members): each completed straight away,
            # what _complete would do for a record.
            selection, nullable = item.selection, not item.nonnull
            for index, each in enumerate(value):
                if type(each) is not dict:
                    if type(each) not in _PLAIN and is_awaitable(each):
                        append(None)
                        self._wait(each, f, item, out, index, slot)
                    else:
                        append(self._complete(f, item, each, out, index, slot))
                    continue
                try:
                    append(self._object(selection, each, (out, index, nullable, slot)))
                except _NullFieldError:
                    if not nullable:
                        raise
                    append(None)
            return out
        for index, each in enumerate(value):
            if type(each) not in _PLAIN and is_awaitable(each):
                append(None)
                self._wait(each, f, item, out, index, slot)
                continue
            append(self._complete(f, item, each, out, index, slot))
        return out

    # -- errors --------------------------------------------------------------------------

    def _failed(
        self, f: FieldPlan, c: Completion, exc: Exception, key: str | int, parent: Slot | None
    ) -> None:
        """Record ``exc`` at ``parent``'s path plus ``key``; :class:`_NullFieldError` when
        the position may not be null (else its value is null)."""
        if isinstance(exc, _NullFieldError):
            raise exc
        self.errors.append(located_error(exc, f.nodes, self._path(parent, key)))
        if c.nonnull:
            raise _NullFieldError from None

    @staticmethod
    def _path(slot: Slot | None, key: str | int) -> list[str | int]:
        keys = [key]
        while slot is not None:
            keys.append(slot[1])
            slot = slot[3]
        keys.reverse()
        return keys

    def _null(self, slot: Slot | None) -> None:
        """The object or list at ``slot`` is null: so is the nearest nullable position at or
        above it (the whole ``data`` at the root)."""
        while slot is not None:
            container, key, nullable, parent = slot
            if nullable:
                container[key] = None
                return
            slot = parent
        self._root_null = True
