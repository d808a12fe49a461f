"""Whole GraphQL responses in the worker's memory, dropped when what they read changes.

A response is stored with the keys it read: the keys of this worker's own partitions
(``local``) and those read from other workers (``remote``, with their ``owners``). A key's
change drops every response that read it, at once and before the change is written
(:meth:`ResponseCache.invalidate`): a local key's by the catalog here, a remote key's when
its owner pushes it (:mod:`mesh.cache.peers`). A response that read remote keys is only
stored and served while this worker holds a lease of each owner, taken before the request
started (``epoch``, :mod:`mesh.cache.leases`): only then is every change pushed here.

A request still being executed when a key it already read changes may have seen the old
value: its :class:`Recorder` is marked and the response is not stored.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

_KEY_OVERHEAD = 64
"""Bytes counted per dependency of a stored response (set and dict entries)."""


@dataclass(eq=False)
class Recorder:
    """What one request read, and whether its response may be stored."""

    local: set[bytes] = field(default_factory=set)
    remote: set[bytes] = field(default_factory=set)
    """Keys read from other workers (from them or from Redis)."""
    owners: set[str] = field(default_factory=set)
    """The workers owning the ``remote`` keys when they were read."""
    epoch: int = 0
    """The lease epoch when the request started (:class:`mesh.cache.leases.HeldLeases`)."""
    cacheable: bool = True
    """False once the response depends on something no invalidation would reach (a list
    scan, a value an owner was about to change) or on a value that changed meanwhile."""


@dataclass
class Entry:
    """One stored response."""

    body: bytes
    keys: frozenset[bytes]
    owners: frozenset[str]
    epoch: int
    size: int


class ResponseCache:
    """A bounded LRU of response bodies keyed by request, invalidated per key read."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self._by_key: dict[bytes, set[Hashable]] = {}
        self._open: set[Recorder] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def busy(self) -> bool:
        """Whether an invalidation could matter: responses are stored or being recorded."""
        return bool(self._entries or self._open)

    def get(self, request: Hashable) -> Entry | None:
        """The stored response of ``request``, or ``None``."""
        entry = self._entries.get(request)
        if entry is not None:
            self._entries.move_to_end(request)
        return entry

    def open(self, epoch: int = 0) -> Recorder:
        """Start recording a request's reads under lease ``epoch`` (close it with
        :meth:`close`)."""
        recorder = Recorder(epoch=epoch)
        self._open.add(recorder)
        return recorder

    def close(self, recorder: Recorder) -> None:
        """Stop watching ``recorder`` for invalidations."""
        self._open.discard(recorder)

    def put(self, request: Hashable, body: bytes, recorder: Recorder) -> bool:
        """Store ``body`` as the response of ``request`` if its recorder allows it."""
        if not recorder.cacheable:
            return False
        keys = frozenset(recorder.local | recorder.remote)
        size = len(body) + _KEY_OVERHEAD * len(keys)
        if size > self.max_bytes:
            return False
        self.discard(request)
        self._entries[request] = Entry(body, keys, frozenset(recorder.owners), recorder.epoch, size)
        self.bytes += size
        for key in keys:
            self._by_key.setdefault(key, set()).add(request)
        while self.bytes > self.max_bytes:
            self.discard(next(iter(self._entries)))
        return True

    def discard(self, request: Hashable) -> None:
        """Forget the response of ``request`` (if stored)."""
        entry = self._entries.pop(request, None)
        if entry is None:
            return
        self.bytes -= entry.size
        for key in entry.keys:
            requests = self._by_key.get(key)
            if requests is not None:
                requests.discard(request)
                if not requests:
                    del self._by_key[key]

    def invalidate(self, keys: Iterable[bytes]) -> int:
        """Drop every response that read one of ``keys``; returns how many were dropped.

        Call it right before the change is written, with no ``await`` in between: requests
        read in the same event loop, so none can read the old value after this returns.
        """
        changed = keys if isinstance(keys, set | frozenset) else set(keys)
        for recorder in self._open:
            if recorder.cacheable and not (
                recorder.local.isdisjoint(changed) and recorder.remote.isdisjoint(changed)
            ):
                recorder.cacheable = False
        dropped = 0
        for key in changed & self._by_key.keys():
            for request in list(self._by_key.get(key, ())):
                self.discard(request)
                dropped += 1
        return dropped

    def clear(self) -> None:
        """Forget everything (this worker's partitions are moving: their changes will no
        longer be seen here); requests being recorded are not stored either."""
        for recorder in self._open:
            recorder.cacheable = False
        self._entries.clear()
        self._by_key.clear()
        self.bytes = 0
