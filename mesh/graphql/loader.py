"""The per-request batched loader: every entity read of one GraphQL request goes through it.

graphql-core resolves sibling fields and list items concurrently when resolvers are async,
so the reads of one nesting level are requested within a few event-loop ticks of each
other. The loader collects them, waits until a tick passes without new keys, then makes
one batch per owner: the keys this worker owns are read from its RocksDB partitions, the
others go in ONE request per owning worker to ``POST /api/v1/internal/entities``. All
answers of a flush are delivered in the same tick, so the next level's reads are again
collected together: each (level, owner) costs one batch, whatever the number of entities
(no N+1). Results are cached for the request, so an entity read twice is read once.
Resolvers ask through :meth:`Loader.fetch`, which answers at once what was read already.

Keys of other workers are looked up in the shared cache first (Redis, when configured),
and what a request reads is noted in its :class:`~mesh.cache.Recorder`, so that its
response can be cached until one of those keys changes (:mod:`mesh.cache`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from opentelemetry import trace

from mesh.auth.principal import Principal
from mesh.cache import ReadCache, Recorder
from mesh.catalog.links import NoLinkError, links_of
from mesh.catalog.router import FleetRouter
from mesh.errors import UnavailableError
from mesh.graphql.metrics import GraphQLMetrics
from mesh.graphql.reads import Key, LocalReads, Location
from mesh.observability.tracing import tracer, tracing_enabled

_log = logging.getLogger(__name__)
T = TypeVar("T")
INTERNAL_ENTITIES_PATH = "/api/v1/internal/entities"
_MAX_SETTLE_TICKS = 20
"""Ticks a flush waits for more keys at most (each tick is microseconds)."""


@dataclass
class BatchRecord:
    """One batch a request made: who answered and how many keys it carried."""

    round: int
    kind: str
    """``local``, ``remote`` or ``standby``."""
    owner: str
    """This worker's name for local batches, the owner's URL for remote ones."""
    keys: int
    names: list[str]
    """Entity types and relations read in the batch."""
    via: str = ""
    """How a remote batch travelled: ``link`` (:mod:`mesh.catalog.links`) or ``http``."""

    def as_json(self) -> dict[str, Any]:
        """The record as shown in the response's ``extensions.batches``."""
        shown = {"round": self.round, "kind": self.kind, "owner": self.owner,
                 "keys": self.keys, "names": self.names}  # fmt: skip
        if self.via:
            shown["via"] = self.via
        return shown


_Waiter = tuple[asyncio.Future[Any], list[asyncio.Future[Any]], Callable[[list[Any]], Any]]


def _traced() -> bool:
    return tracing_enabled() and trace.get_current_span().is_recording()


def _nothing(values: list[Any]) -> None:
    # ``then`` of a read ahead: errors stay with the keys, for their own resolvers.
    return None


def _failure(futures: list[asyncio.Future[Any]]) -> BaseException | None:
    # Every failed future's error is looked at, so asyncio does not log it as never
    # retrieved; the first one in key order is the one reported.
    failed = None
    for future in futures:
        error = future.exception()
        if failed is None:
            failed = error
    return failed


@dataclass
class Loader:
    """Batches and caches the reads of one GraphQL request (build one per request)."""

    reads: LocalReads
    router: FleetRouter
    metrics: GraphQLMetrics
    worker: str
    tenant: str
    """The request's tenant: every key it reads is that tenant's (see :mod:`.reads`)."""
    batches: list[BatchRecord] = field(default_factory=list)
    _cache: dict[Key, asyncio.Future[Any]] = field(default_factory=dict)
    _pending: list[Key] = field(default_factory=list)
    _flushing: asyncio.Task[None] | None = None
    _rounds: int = 0
    cache: ReadCache | None = None
    """The worker's caches: keys of other workers are looked up in Redis first."""
    recorder: Recorder | None = None
    """Collects what the request read, for the response cache."""
    _waiters: list[_Waiter] = field(default_factory=list)
    """Futures of :meth:`fetch` still waiting, with the keys' futures and their ``then``."""
    memo: dict[Any, Any] = field(default_factory=dict)
    """What resolvers work out once per request (e.g. per selection), not once per entity."""
    principal: Principal | None = None
    """Who the request acts for: fields with a scope policy are withheld from others."""
    cacheable: bool = True
    """False once the request read or wrote something the response cache cannot track
    (a saga: its state is not a catalog entity, and a mutation acts)."""

    def prime(self, record: dict[str, Any]) -> None:
        """Cache an entity record read otherwise (a list page), so it is not read again."""
        key = Key("entity", record["type"], record["id"])
        if key not in self._cache:
            future = asyncio.get_running_loop().create_future()
            future.set_result(record)
            self._cache[key] = future

    def fetch(self, keys: list[Key], then: Callable[[list[Any]], T]) -> T | asyncio.Future[T]:
        """``then(values of keys)`` now when every key is read already, else a future of it,
        set in the tick the last of them is read (the first failed key's error fails it).

        Resolvers return the value or the future as is: graphql-core completes a plain
        value far cheaper than an awaitable, and one future for a whole list of keys
        replaces a coroutine and a task per key. The future belongs to the caller alone,
        so cancelling it leaves the shared per-key futures alone.
        """
        cache = self._cache
        futures = []
        done, added = True, False
        for key in keys:
            future = cache.get(key)
            if future is None:
                future = cache[key] = asyncio.get_running_loop().create_future()
                self._pending.append(key)
                done, added = False, True
            elif done and not future.done():
                done = False
            futures.append(future)
        if not done:
            # A key still in flight is settled by the flush reading it.
            if added and self._flushing is None:
                self._flushing = asyncio.create_task(self._flush())
            waiter: asyncio.Future[T] = asyncio.get_running_loop().create_future()
            self._waiters.append((waiter, futures, then))
            return waiter
        failed = _failure(futures)
        if then is _nothing:
            return then([])
        if failed is not None:
            # Failed as an awaitable, like a key read now would: graphql-core then lets
            # the sibling fields go on, where a raised error could cut their reads short.
            future = asyncio.get_running_loop().create_future()
            future.set_exception(failed)
            return future
        return then([future.result() for future in futures])

    def ready(self, keys: list[Key]) -> asyncio.Future[None] | None:
        """``None`` when every key is read already, else a future set once they are: read
        ahead for the next level, whose resolvers then find their values (or errors)."""
        found = self.fetch(keys, _nothing)
        return found if isinstance(found, asyncio.Future) else None

    def _settle(self) -> None:
        # Called once a flush has settled its keys: wake every waiter whose keys are all
        # read now, in this same tick.
        waiting: list[_Waiter] = []
        for waiter in self._waiters:
            future, futures, then = waiter
            if not all(f.done() for f in futures):
                waiting.append(waiter)
                continue
            failed = _failure(futures)
            if future.done():  # cancelled: its resolver is gone
                continue
            if then is _nothing:
                future.set_result(None)
                continue
            if failed is not None:
                future.set_exception(failed)
                continue
            try:
                future.set_result(then([f.result() for f in futures]))
            except Exception as exc:
                future.set_exception(exc)
        self._waiters = waiting

    async def _flush(self) -> None:
        # Let the siblings still being scheduled add their keys: stop at the first tick
        # that adds none.
        seen = -1
        for _ in range(_MAX_SETTLE_TICKS):
            if len(self._pending) == seen:
                break
            seen = len(self._pending)
            await asyncio.sleep(0)
        keys, self._pending, self._flushing = self._pending, [], None
        try:
            if tracing_enabled():
                with tracer().start_as_current_span(
                    "graphql batch", attributes={"dictamesh.keys": len(keys)}
                ):
                    await self._read(keys)
            else:
                await self._read(keys)
        except BaseException as exc:
            # Whatever went wrong, no resolver may wait forever for its key; the error
            # reaches the request through the keys (a background task's would be lost).
            for key in keys:
                future = self._cache[key]
                if not future.done():
                    future.set_exception(UnavailableError(f"reading failed: {exc!r}"))
            self._settle()
            if not isinstance(exc, Exception):
                raise
            _log.exception("a GraphQL batch failed")
        else:
            self._settle()

    async def _read(self, keys: list[Key]) -> None:
        self._rounds += 1
        results: dict[Key, Any] = {}
        groups: dict[str | None, list[tuple[Key, Location]]] = defaultdict(list)
        for key in keys:
            try:
                location = self.reads.locate(key, self.tenant)
            except (UnavailableError, ValueError) as exc:
                results[key] = exc
                continue
            groups[location.owner].append((key, location))
        remote = [(owner, items) for owner, items in groups.items() if owner]
        if remote:
            results.update(await self._read_remote(remote))
        if None in groups:
            if self.recorder is not None:
                self.recorder.local.update(loc.cache_key for _, loc in groups[None])
            results.update(self._local(groups[None]))
        # Every future of the flush is settled in the same tick, so the next level's
        # reads are requested together again.
        for key in keys:
            future = self._cache[key]
            value = results[key] if key in results else UnavailableError("not answered")
            if isinstance(value, Exception):
                future.set_exception(value)
            else:
                future.set_result(value)

    def scanned(self) -> None:
        """The request reads a list page: it depends on which entities exist, which no
        key's invalidation covers, so its response is not cached."""
        if self.recorder is not None:
            self.recorder.cacheable = False

    async def _read_remote(
        self, remote: list[tuple[str, list[tuple[Key, Location]]]]
    ) -> dict[Key, Any]:
        """Other workers' keys: from the shared cache where it holds them, else in one
        request per owner, whose answers are then offered to the cache."""
        keys = [key for _, owned in remote for key, _ in owned]
        names = [loc.cache_key for _, owned in remote for _, loc in owned]
        if self.recorder is not None:
            # Noted before any await: an owner's push arriving meanwhile must find them.
            self.recorder.remote.update(names)
            self.recorder.owners.update(owner for owner, _ in remote)
        found = None if self.cache is None else await self.cache.lookup(names)
        results: dict[Key, Any] = {}
        tokens: dict[Key, tuple[bytes, str]] = {}
        if found is not None:
            for key, name, (token, value) in zip(keys, names, found, strict=True):
                if value is not None:
                    results[key] = value
                else:
                    tokens[key] = (name, token)
        unanswered = [
            (o, [(k, loc) for k, loc in owned if k not in results]) for o, owned in remote
        ]
        pending: set[Key] = set()
        answers = await asyncio.gather(
            *(self._remote(owner, owned, pending) for owner, owned in unanswered if owned)
        )
        for answer in answers:
            results.update(answer)
        if self.cache is not None and tokens:
            fetched = [
                (*tokens[k], v)
                for k, v in results.items()
                if k in tokens and k not in pending and not isinstance(v, Exception)
            ]
            await self.cache.fill(fetched)
        return results

    async def _ask(self, owner: str, body: dict[str, Any], record: BatchRecord) -> Any:
        """The results the worker at ``owner`` gives for ``body``: on the link to it, or
        over HTTP for a request being traced (the owner's span then joins the trace) and
        for a peer without links."""
        links = links_of(self.router.context)
        link = None if _traced() else links.link(self.router, owner)
        if link is not None:
            record.via = "link"
            try:
                answer = await link.read(body, self.router.context.settings.peer_timeout_s)
            except NoLinkError:
                links.http_only(owner)
            else:
                if "error" in answer:
                    raise UnavailableError(f"the worker at {owner} refused: {answer['error']}")
                return answer["results"]
        record.via = "http"
        reply = await self.router.ask(owner, INTERNAL_ENTITIES_PATH, method="POST", body=body)
        if reply.status != 200:
            raise UnavailableError(f"the worker at {owner} answered {reply.status}")
        return reply.json()["results"]

    def _standby(self, owned: list[tuple[Key, Location]], why: UnavailableError) -> dict[Key, Any]:
        """Keys whose owner did not answer: from this worker's standby replicas where it
        holds them (see :meth:`FleetRouter.standby_readable`), else failed with ``why``."""
        readable = [
            (k, loc) for k, loc in owned if self.router.standby_readable(loc.store, loc.partition)
        ]
        results: dict[Key, Any] = dict.fromkeys((k for k, _ in owned), why)
        if readable:
            if self.recorder is not None:
                self.recorder.cacheable = False  # a replica's answer may be a moment behind
            self._record("standby", self.worker, [k for k, _ in readable])
            results.update(self._local_reads(readable))
        return results

    def _record(self, kind: str, owner: str, keys: list[Key]) -> BatchRecord:
        names = sorted({k.name for k in keys})
        record = BatchRecord(self._rounds, kind, owner, len(keys), names)
        self.batches.append(record)
        self.metrics.batch(kind, len(keys))
        return record

    def _local(self, items: list[tuple[Key, Location]]) -> dict[Key, Any]:
        self._record("local", self.worker, [k for k, _ in items])
        return self._local_reads(items)

    def _local_reads(self, items: list[tuple[Key, Location]]) -> dict[Key, Any]:
        results: dict[Key, Any] = {}
        for key, location in items:
            try:
                results[key] = self.reads.read(key, location)
            except Exception as exc:  # a bad key fails its own read, not the batch
                results[key] = UnavailableError(f"reading {key.name} {key.id} failed: {exc!r}")
        return results

    async def _remote(
        self, owner: str, owned: list[tuple[Key, Location]], pending: set[Key]
    ) -> dict[Key, Any]:
        """``owned`` read from ``owner``; the keys it answered as about to change are
        added to ``pending`` (and the response is not cached)."""
        keys = [key for key, _ in owned]
        record = self._record("remote", owner, keys)
        body = {"tenant": self.tenant, "keys": [k.as_json() for k in keys]}
        try:
            answers = await self._ask(owner, body, record)
        except (ValueError, KeyError, TypeError) as exc:
            why = f"the worker owning these keys ({owner}) answered nonsense: {exc!r}"
            return dict.fromkeys(keys, UnavailableError(why))
        except UnavailableError as exc:
            return self._standby(owned, exc)
        results: dict[Key, Any] = {}
        for key, answer in zip(keys, answers, strict=False):
            if "error" in answer:
                results[key] = UnavailableError(str(answer["error"]))
                continue
            results[key] = answer["value"]
            if answer.get("pending"):
                pending.add(key)
                if self.recorder is not None:
                    self.recorder.cacheable = False
        return results
