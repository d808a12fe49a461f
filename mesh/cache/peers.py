"""Changes pushed to the workers caching them, under leases (:mod:`mesh.cache.leases`).

Every worker with a response cache holds a lease from each other worker of the fleet,
renewed every quarter of ``MESH_CACHE_LEASE_S`` (``POST /api/v1/internal/cache/lease``).
The owner of a changed key sends the key to every lease holder before writing it
(``POST /api/v1/internal/cache/invalidate``); the holder drops the responses that read it
and stops any request that read it from storing its answer. A holder that does not take
the push in time loses its lease, and the change waits for that lease to end: a stopped
or partitioned worker delays the fleet's writes by at most one lease, never lets a
cached answer outlive a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from mesh.cache.leases import GrantedLeases, HeldLeases
from mesh.cache.metrics import CacheMetrics
from mesh.cache.responses import ResponseCache
from mesh.errors import UnavailableError


class _Answer(Protocol):
    @property
    def status(self) -> int: ...


class Fleet(Protocol):
    """What the leases need of the fleet router (:class:`mesh.catalog.router.FleetRouter`,
    which the catalog owns: the caches sit below it)."""

    def peers(self) -> list[str]: ...

    async def ask(
        self,
        url: str,
        path: str,
        *,
        method: str = ...,
        body: Any = ...,
        timeout_s: float | None = ...,
    ) -> _Answer: ...


log = logging.getLogger(__name__)
LEASE_PATH = "/api/v1/internal/cache/lease"
INVALIDATE_PATH = "/api/v1/internal/cache/invalidate"


def encode_keys(keys: Iterable[bytes]) -> list[str]:
    """Cache keys as JSON strings (latin-1 maps every byte to one character and back)."""
    return [key.decode("latin-1") for key in keys]


def decode_keys(raw: Any) -> set[bytes]:
    """The cache keys of a push; :class:`ValueError` when it is not a list of strings."""
    if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
        raise ValueError("'keys' must be a list of strings")
    return {key.encode("latin-1") for key in raw}


class PeerInvalidations:
    """Both sides of the leases of one worker: holding them from its peers (and taking
    their pushes), and granting them (and pushing its changes)."""

    def __init__(
        self,
        router: Fleet,
        responses: ResponseCache | None,
        metrics: CacheMetrics,
        lease_s: float,
        me: Callable[[], str],
    ) -> None:
        """``responses``: ``None`` when this worker caches no responses (then it holds no
        leases, only grants them); ``me``: this worker's URL, where peers push to it."""
        self.router = router
        self._me = me
        self.responses = responses
        self.metrics = metrics
        self.lease_s = lease_s
        self.held = HeldLeases(lease_s)
        self.granted = GrantedLeases(lease_s)
        metrics.lease_starts = lambda: self.held.epoch
        self._task: asyncio.Task[None] | None = None

    @property
    def me(self) -> str:
        """This worker's URL: where peers push to it."""
        return self._me()

    # -- as the reader ---------------------------------------------------------------------

    def start(self) -> None:
        """Renew the leases in the background (when this worker caches responses)."""
        if self.responses is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._renew_forever())

    async def close(self) -> None:
        """Stop renewing: the leases lapse on their own."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _renew_forever(self) -> None:
        while True:
            try:
                await self.renew()
            except Exception:  # a bug: the leases lapse, responses stop being served
                log.exception("renewing the cache leases failed")
            await asyncio.sleep(self.lease_s / 4)

    async def renew(self) -> None:
        """Ask every other worker of the fleet for a lease, at once."""
        peers = self.router.peers()
        self.held.forget(peers)
        await asyncio.gather(*(self._renew(owner) for owner in peers))

    async def _renew(self, owner: str) -> None:
        asked = self.held.clock()
        try:
            answer = await self.router.ask(
                owner, LEASE_PATH, method="POST", body={"worker": self.me},
                timeout_s=self.lease_s / 4,
            )  # fmt: skip
        except UnavailableError:
            return  # the lease lapses on its own
        if answer.status == 200:
            self.held.granted(owner, asked)
        elif answer.status == 409:
            self.held.refused(owner)

    def take(self, keys: set[bytes]) -> int:
        """A peer pushed ``keys``: drop what read them; returns how many responses."""
        if self.responses is None:
            return 0
        dropped = self.responses.invalidate(keys)
        self.metrics.invalidated.labels(cache="response").inc(dropped)
        return dropped

    def covers(self, owners: Iterable[str], epoch: int) -> bool:
        """Whether a response recorded under ``epoch`` reading ``owners``' keys may be
        stored or served (see :meth:`HeldLeases.valid`)."""
        return self.held.valid(owners, epoch)

    # -- as the owner ----------------------------------------------------------------------

    def grant(self, reader: str) -> bool:
        """``reader`` asks for a lease: ``False`` while its last one is revoked."""
        return self.granted.grant(reader)

    def listening(self) -> bool:
        """Whether any peer holds a lease: changes must be pushed."""
        return bool(self.granted.holders())

    async def push(self, keys: set[bytes]) -> None:
        """Send ``keys`` to every lease holder; return once each took them or its lease
        has ended. Holders granted meanwhile are sent them too."""
        body = {"worker": self.me, "keys": encode_keys(keys)}
        sent: set[str] = set()
        while True:
            holders = [h for h in self.granted.holders() if h not in sent]
            if not holders:
                return
            taken = await asyncio.gather(*(self._push(reader, body) for reader in holders))
            wait = 0.0
            for reader, ok in zip(holders, taken, strict=True):
                sent.add(reader)
                self.metrics.pushes.labels(result="ok" if ok else "failed").inc()
                if not ok:
                    wait = max(wait, self.granted.revoke(reader))
            if wait > 0:
                log.warning(
                    "a worker holding a cache lease did not take a change of %d keys; "
                    "its lease is revoked and the change waits %.2f s for it to end",
                    len(keys), wait,
                )  # fmt: skip
                await asyncio.sleep(wait)

    async def _push(self, reader: str, body: dict[str, Any]) -> bool:
        try:
            answer = await self.router.ask(
                reader, INVALIDATE_PATH, method="POST", body=body, timeout_s=self.lease_s
            )
        except UnavailableError:
            return False
        return answer.status == 200
