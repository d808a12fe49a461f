"""The fleet router: which partition and worker own a key, and how to ask them.

Every read that may cross workers goes through here: the REST entity API, the GraphQL
loader, list scans, the fleet-wide counts and the sources' child lookups. So there is one
answer to "who owns this key", one pooled peer client (Faust's), one timeout
(``MESH_PEER_TIMEOUT_S``) and one policy for a fleet that cannot answer right now: the
read fails with :class:`~mesh.errors.UnavailableError` (retriable, ``retry_after`` set),
which each face turns into its own "retry": REST a 503 with ``Retry-After``, GraphQL an
error naming the cause, a source adapter its backoff. Nothing retries inside the router: a
rebalance takes seconds, longer than a client should wait on one request.

Ownership is Faust's assignor's (the worker actively owning the changelog partition of the
entity's table); partitions are the producers' default partitioner's (murmur2) over the
entity topic. A forwarded read is never forwarded again: stale metadata mid-rebalance
fails it instead of bouncing it between workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from yarl import URL

from mesh.auth.peer import PEER_PREFIX, TENANT_HEADER, fleet_principal
from mesh.auth.verifier import peer_signer
from mesh.context import MeshContext
from mesh.errors import UnavailableError
from mesh.runtime.partitioning import key_partition
from mesh.runtime.store import PartitionStore

WORKER_HEADER = "X-Mesh-Worker"
"""Names the worker that answered (every answer of the web API carries it)."""
PARTITION_HEADER = "X-Mesh-Partition"
ROUTED_HEADER = "X-Mesh-Routed-Via"
"""On a forwarded request: the worker that forwarded it (so it is never forwarded again)."""
STANDBY_HEADER = "X-Mesh-Standby"
"""On an answer read from this worker's standby replica because the owner did not answer."""

STANDBY_MAX_LAG = 10
"""Changelog records a standby replica may be behind and still answer for its owner."""
_PARTITIONS_KEPT = 100_000
"""Keys whose partition a router remembers (then it starts again)."""


@dataclass(frozen=True)
class Route:
    """Where a key lives: its partition and, when another worker owns it, that worker's URL."""

    partition: int
    owner: str | None
    """``None`` when this worker actively owns the partition."""


@dataclass(frozen=True)
class PeerAnswer:
    """What a peer worker answered."""

    url: str
    status: int
    body: bytes
    content_type: str
    headers: Mapping[str, str]

    def json(self) -> Any:
        """The body decoded; ``ValueError`` when it is not JSON."""
        return orjson.loads(self.body)


class FleetRouter:
    """Key → partition → owning worker, and requests to the owners (see the module doc)."""

    def __init__(self, context: MeshContext) -> None:
        self.context = context
        self.membership = context.membership
        self.worker = context.settings.worker_name
        self.timeout = aiohttp.ClientTimeout(total=context.settings.peer_timeout_s)
        self.signer = peer_signer(context.settings)
        self.peer_offset = context.settings.peer_port_offset
        self._partitions: dict[tuple[str, bytes], int] = {}
        self._partitions_stamp: tuple[int, int] | None = None
        self._owners: dict[tuple[str, int], str | None] = {}
        """Owner URL (``None``: this worker or nobody) per (table, partition) under
        :attr:`_partitions_stamp`: looked up per key read, it changes only on rebalance."""

    # -- where -----------------------------------------------------------------------------

    def partition(self, entity_type: str, key: bytes) -> int:
        """The partition the producers' default partitioner picks for ``key``.

        The consumer hashes with the topic's metadata (its real partition count); before
        the consumer runs, the fleet's configured count is what topics are made with.
        """
        stamp = self.membership.stamp()
        if stamp != self._partitions_stamp:  # a partition count may have changed with it
            self._partitions.clear()
            self._owners.clear()
            self._partitions_stamp = stamp
        known = self._partitions.get((entity_type, key))
        if known is not None:
            return known
        topic = self.context.domain.topic(entity_type)
        found = self.membership.key_partition(topic, key)
        if found is None:
            return key_partition(key, self.context.settings.topic_partitions)
        # murmur2 is pure Python in aiokafka: remember what GraphQL asks again and again.
        if len(self._partitions) >= _PARTITIONS_KEPT:
            self._partitions.clear()
        if stamp is not None:
            self._partitions[(entity_type, key)] = found
        return found

    def route(self, entity_type: str, key: bytes, *, forwarded: bool = False) -> Route:
        """Where the entity ``key`` (its URN's bytes) of ``entity_type`` lives.

        :class:`UnavailableError` when this worker owns it but is recovering, or when no
        other worker owns it (or, for a ``forwarded`` read, when this one does not).
        """
        if self.membership.stopping():
            raise UnavailableError("this worker is stopping; ask another")
        if self.membership.rebalancing():
            # Partitions are being revoked and their databases closed: a local read could
            # answer "not found" for an entity that exists.
            raise UnavailableError(
                "the fleet is rebalancing; retry",
                retry_after=max(1.0, self.context.settings.rebalance_timeout_s),
            )
        partition = self.partition(entity_type, key)
        store = self.context.catalog.entities[entity_type]
        if store.owns(partition):
            if self.membership.recovering():
                raise UnavailableError("this worker is recovering its tables; retry")
            return Route(partition, None)
        owner = None
        if not forwarded:
            owner = self._owner(store, partition)
        if owner is None:
            # A rebalance lasts about the rebalance timeout: retrying sooner only fails again.
            raise UnavailableError(
                f"no worker owns partition {partition} of {entity_type} right now "
                "(the fleet is rebalancing); retry",
                retry_after=max(1.0, self.context.settings.rebalance_timeout_s),
            )
        return Route(partition, owner)

    def _owner(self, store: PartitionStore, partition: int) -> str | None:
        """The URL of the other worker owning ``partition`` of ``store``, if any."""
        cached = (store.name, partition)
        if cached in self._owners:
            return self._owners[cached]
        owner = self.membership.owner_url(store.name, store.changelog_topic, partition)
        if owner is not None and self.is_self(owner):
            owner = None
        if self._partitions_stamp is not None:  # steady: the assignment holds until it moves
            self._owners[cached] = owner
        return owner

    def is_self(self, url: str) -> bool:
        """True when ``url`` is this worker's own web server."""
        return self.membership.is_self(url)

    def standby_readable(self, store: PartitionStore, partition: int) -> bool:
        """True when a read of ``partition`` of ``store`` whose owner did not answer may be
        served from this worker's standby replica instead.

        While a static member restarts, the group keeps its partitions assigned to it
        (that is what keeps a rolling restart from moving them), so nobody else owns them.
        Only a replica at most :data:`STANDBY_MAX_LAG` changelog records behind answers,
        and the answer says it came from one.
        """
        return not self.membership.recovering() and store.holds_standby(
            partition, max_lag=STANDBY_MAX_LAG
        )

    def peers(self) -> list[str]:
        """The web URL of every other worker of the group."""
        return [u for u in self.membership.peer_urls() if not self.is_self(u)]

    # -- asking ----------------------------------------------------------------------------

    async def ask(
        self,
        url: str,
        path: str,
        *,
        method: str = "GET",
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        tenant: str | None = None,
        timeout_s: float | None = None,
    ) -> PeerAnswer:
        """``method path`` of the worker at ``url`` (``path`` as received: still
        percent-encoded); :class:`UnavailableError` when it does not answer in time.
        ``tenant``: the fleet's call is made for that tenant (a public path answers as
        that tenant; peer endpoints take the tenant from the body). ``timeout_s``: instead
        of ``MESH_PEER_TIMEOUT_S``.

        Any HTTP status is an answer: the caller decides what a 404 or a 503 means.
        """
        data = b"" if body is None else orjson.dumps(body)
        sent = dict(headers or {})
        if body is not None:
            sent["Content-Type"] = "application/json"
        target, sent = self.peer_target(url, path, method, data, sent, tenant)
        timeout = self.timeout if timeout_s is None else aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with self.context.app.http_client.request(
                method, target, data=data or None, headers=sent, timeout=timeout
            ) as resp:
                return PeerAnswer(
                    url, resp.status, await resp.read(), resp.content_type, dict(resp.headers)
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UnavailableError(
                f"the worker at {url} did not answer: {type(exc).__name__}"
            ) from None

    def peer_target(
        self,
        url: str,
        path: str,
        method: str,
        data: bytes,
        headers: dict[str, str] | None = None,
        tenant: str | None = None,
    ) -> tuple[URL, dict[str, str]]:
        """Where a call of ``method path`` with body ``data`` to the worker at ``url`` goes
        (peer paths on the peer port) and its headers, signed as the fleet's call."""
        base = URL(url.rstrip("/"))
        if self.peer_offset and path.startswith(PEER_PREFIX) and base.port is not None:
            base = base.with_port(base.port + self.peer_offset)
        target = URL(str(base) + path, encoded=True)
        sent = dict(headers or {})
        fleet = None if tenant is None else fleet_principal(tenant)
        if self.signer is not None and "Authorization" not in sent:
            # Every call between workers is the fleet's (peer endpoints accept nothing else;
            # a public one, e.g. a child lookup, accepts it in place of a user's token).
            sent.update(self.signer.headers(method, path, data, fleet))
        elif fleet is not None and "Authorization" not in sent:
            sent[TENANT_HEADER] = fleet.tenant  # MESH_AUTH=off: read as that tenant
        return target, sent

    async def ask_all(
        self, path: str, *, method: str = "GET", body: Any = None
    ) -> list[tuple[str, PeerAnswer | UnavailableError]]:
        """Ask every other worker at once; each peer's answer or why it gave none."""
        peers = self.peers()
        answers = await asyncio.gather(
            *(self.ask(u, path, method=method, body=body) for u in peers), return_exceptions=True
        )
        found: list[tuple[str, PeerAnswer | UnavailableError]] = []
        for url, answer in zip(peers, answers, strict=True):
            if isinstance(answer, UnavailableError | PeerAnswer):
                found.append((url, answer))
            else:
                raise answer
        return found
