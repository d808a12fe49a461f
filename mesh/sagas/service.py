"""The worker's sagas: start, read and list them anywhere in the fleet, and drive the ones
whose partition this worker owns.

A saga lives on the partition of its id; the worker actively owning that partition of the
saga table creates it (once: a second start with the same id returns it) and drives it.
Any worker takes a request: it forwards a start or a read to the owner over the signed
peer hop, as reads of the catalog are. Stock reservations of a product are made by the
owner of the product's catalog partition (:mod:`mesh.sagas.stock`), reached the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any
from urllib.parse import quote, urlencode

from pydantic import SecretStr

from mesh.catalog.reader import CatalogReader
from mesh.codec import RegistryClient
from mesh.context import MeshContext
from mesh.deadletter import dead_letter_headers, dead_letter_topic
from mesh.errors import SagaError, SagaInputError, UnavailableError
from mesh.retry import RetryPolicy
from mesh.runtime.kafka import TopicSender
from mesh.runtime.keyed_table import KeyedTable
from mesh.sagas.engine import SagaEngine
from mesh.sagas.events import SagaEvents
from mesh.sagas.faults import FaultPoints
from mesh.sagas.ids import saga_id
from mesh.sagas.metrics import SagaMetrics
from mesh.sagas.registry import saga_definitions
from mesh.sagas.state import Event, SagaState, SagaStatus
from mesh.sagas.stock import StockKeeper
from mesh.sagas.store import SAGA_TABLE, SagaStore
from mesh.sources.directus.client import DirectusAuth, DirectusClient

__all__ = ["PEER_SAGAS_PATH", "PEER_STOCK_PATH", "Sagas"]

log = logging.getLogger(__name__)

PEER_SAGAS_PATH = "/api/v1/internal/sagas"
PEER_STOCK_PATH = "/api/v1/internal/stock"
MAX_PAGE = 100


class Sagas:
    """One worker's saga API and driver (see the module docs)."""

    def __init__(self, context: MeshContext, table: KeyedTable) -> None:
        self.context = context
        settings = context.settings
        self.store = SagaStore(table)
        self.metrics = SagaMetrics(context.metrics)
        self.faults = FaultPoints(settings.saga_crash_at, settings.saga_crash_marker)
        self.events = SagaEvents(context.app, RegistryClient.from_settings(settings))
        self.reader = CatalogReader(context)
        self.router = self.reader.router
        self.stock = StockKeeper(self.writer, self.metrics, self.faults)
        self.definitions = saga_definitions(self)
        self._services: dict[str, Any] = {n: d.services() for n, d in self.definitions.items()}
        self._writers: dict[str, DirectusClient] = {}
        self._dead = TopicSender(context.app, dead_letter_topic(settings.app_id))
        self.engine = SagaEngine(
            self.store,
            self.events,
            self.metrics,
            self.definitions,
            self._services,
            self.faults,
            self._dead_letter,
        )
        self.tasks: dict[str, asyncio.Task[SagaState]] = {}
        self._scanned: tuple[int, int] | None = None
        self._rescan = True

    # -- dependencies ------------------------------------------------------------------

    def writer(self, tenant: str) -> DirectusClient:
        """The Directus client sagas write ``tenant``'s data with (its own role's token)."""
        client = self._writers.get(tenant)
        if client is not None:
            return client
        spec = next(
            (
                s
                for s in self.context.domain.sources
                if s.tenant == tenant and s.kind == "directus" and s.enabled
            ),
            None,
        )
        if spec is None:
            raise SagaError(f"tenant {tenant} has no enabled Directus source to write to")
        env = spec.write_token_env
        token = os.environ.get(env) if env else None
        if not token:
            raise SagaError(
                f"sagas cannot write to source {spec.name}: set its write token "
                f"({env or 'write_token_env in the domain config'})"
            )
        client = DirectusClient(
            spec.url,
            DirectusAuth.static(SecretStr(token), from_env=env),
            timeout_s=spec.request_timeout_s,
            retry=RetryPolicy(0.1, 1.0),
            max_attempts=1,
            session=self.context.app.http_client,
        )
        self._writers[tenant] = client
        return client

    async def stock_call(
        self, tenant: str, product: str, request: dict[str, Any]
    ) -> dict[str, Any]:
        """A reservation or release by the worker owning ``product``'s catalog partition."""
        urn = self.context.domain.urn(tenant, "product", product).encode()
        route = self.router.route("product", urn)
        if route.owner is None:
            return await self.stock_local(tenant, product, request)
        body = {"tenant": tenant, "product": product, **request}
        answer = await self.router.ask(route.owner, PEER_STOCK_PATH, method="POST", body=body)
        if answer.status != 200:
            raise UnavailableError(
                f"the owner of product {product} answered HTTP "
                f"{answer.status}: {answer.body[:200]!r}"
            )
        result: dict[str, Any] = answer.json()
        return result

    async def stock_local(
        self, tenant: str, product: str, request: dict[str, Any]
    ) -> dict[str, Any]:
        return await self.stock.handle(tenant, product, request)

    async def _dead_letter(self, state: SagaState) -> None:
        headers = dead_letter_headers(
            stage="saga",
            error=SagaError(state.error or "compensation failed"),
            context={"saga": state.id, "saga_type": state.saga_type, "tenant": state.tenant},
        )
        sent = await self._dead.send(state.id.encode(), state.dumps(), headers)
        await sent

    # -- where a saga lives ----------------------------------------------------------------

    def owned(self) -> frozenset[int]:
        membership = self.context.membership
        if not membership.ready() or membership.recovering():
            return frozenset()
        return membership.active(self.store.changelog_topic)

    def _owner(self, saga: str) -> str | None:
        """``None`` when this worker owns ``saga``; else the owner's URL."""
        partition = self.store.partition(saga)
        if partition in self.owned():
            return None
        owner = self.context.membership.owner_url(SAGA_TABLE, self.store.changelog_topic, partition)
        if owner is None or self.router.is_self(owner):
            raise UnavailableError(
                f"no worker owns partition {partition} of the sagas right now; retry",
                retry_after=max(1.0, self.context.settings.rebalance_timeout_s),
            )
        return owner

    # -- the API ---------------------------------------------------------------------------

    def prepare(self, saga_type: str, raw_input: Any) -> dict[str, Any]:
        definition = self.definitions.get(saga_type)
        if definition is None:
            raise SagaInputError(f"unknown saga type {saga_type!r}")
        return definition.validate(raw_input)

    async def start(self, saga_type: str, tenant: str, key: str, raw_input: Any) -> SagaState:
        """Start (or find) the saga for ``key``; returns once its start is persisted."""
        if not isinstance(key, str) or not 1 <= len(key) <= 200:
            raise SagaInputError("the idempotency key must be 1 to 200 characters")
        order = self.prepare(saga_type, raw_input)
        self.definitions[saga_type].preflight(self._services[saga_type], tenant)
        sid = saga_id(tenant, saga_type, key)
        owner = self._owner(sid)
        if owner is None:
            return await self.start_local(sid, saga_type, tenant, order)
        body = {"id": sid, "type": saga_type, "tenant": tenant, "input": order}
        answer = await self.router.ask(owner, PEER_SAGAS_PATH, method="POST", body=body)
        if answer.status != 200:
            raise UnavailableError(f"the owner of saga {sid} answered HTTP {answer.status}")
        return SagaState.loads(answer.body)

    async def start_local(
        self, sid: str, saga_type: str, tenant: str, order: dict[str, Any]
    ) -> SagaState:
        existing = self.store.get(sid)
        if existing is not None:
            return existing
        definition = self.definitions[saga_type]
        state = SagaState(sid, saga_type, tenant, order, time.time() + definition.deadline_s)
        await self.engine.persist(state, Event.STARTED, publish=False)
        self.metrics.started.labels(saga_type).inc()
        self._drive(state)  # publishes STARTED first: a failed publish is retried with it
        return state

    async def get(self, tenant: str, sid: str) -> SagaState | None:
        """``tenant``'s saga ``sid`` (``None``: there is none, or it is another tenant's)."""
        owner = self._owner(sid)
        if owner is None:
            state = self.store.get(sid)
        else:
            answer = await self.router.ask(owner, f"{PEER_SAGAS_PATH}/{quote(sid, safe='')}")
            if answer.status == 404:
                return None
            if answer.status != 200:
                raise UnavailableError(f"the owner of saga {sid} answered HTTP {answer.status}")
            state = SagaState.loads(answer.body)
        return state if state is not None and state.tenant == tenant else None

    def list_local(
        self, tenant: str, status: str | None, after: str | None, limit: int
    ) -> list[SagaState]:
        found = [
            s
            for s in self.store.states(self.owned())
            if s.tenant == tenant
            and (status is None or s.status.value == status)
            and (after is None or s.id > after)
        ]
        return sorted(found, key=lambda s: s.id)[:limit]

    async def list(
        self, tenant: str, status: str | None, first: int, after: str | None
    ) -> tuple[list[SagaState], bool]:
        """A page of ``tenant``'s sagas in id order; and whether more follow."""
        if status is not None and status not in SagaStatus.__members__:
            raise SagaInputError(f"unknown saga status {status!r}")
        limit = max(1, min(first, MAX_PAGE))
        query = {"tenant": tenant, "limit": str(limit + 1)}
        if status is not None:
            query["status"] = status
        if after is not None:
            query["after"] = after
        found = self.list_local(tenant, status, after, limit + 1)
        for url, answer in await self.router.ask_all(f"{PEER_SAGAS_PATH}?{urlencode(query)}"):
            if isinstance(answer, UnavailableError) or answer.status != 200:
                raise UnavailableError(f"the worker at {url} did not list its sagas; retry")
            found.extend(SagaState.loads(raw.encode()) for raw in answer.json()["sagas"])
        found.sort(key=lambda s: s.id)
        return found[:limit], len(found) > limit

    # -- driving ---------------------------------------------------------------------------

    def _drive(self, state: SagaState) -> None:
        if state.id in self.tasks:
            return
        task = asyncio.ensure_future(self._run(state))
        self.tasks[state.id] = task

    async def _run(self, state: SagaState) -> SagaState:
        try:
            return await self.engine.drive(state)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The state is persisted up to its last transition: the next reconcile resumes it.
            log.exception("saga %s stopped on an error; it will be resumed", state.id)
            self._rescan = True
            return state
        finally:
            self.tasks.pop(state.id, None)

    def reconcile(self) -> None:
        """Drive every unfinished saga this worker owns; stop those it no longer owns."""
        owned = self.owned()
        for sid, task in list(self.tasks.items()):
            if self.store.partition(sid) not in owned:
                task.cancel()
        stamp = self.context.membership.stamp()
        if not owned or stamp is None or (stamp == self._scanned and not self._rescan):
            return  # sagas started since the last scan are driven from their start
        self._scanned, self._rescan = stamp, False
        for state in self.store.states(owned):
            if not state.done and state.id not in self.tasks:
                self._drive(state)

    async def revoke(self, partitions: set[int]) -> None:
        """Stop driving the sagas of ``partitions`` (their next owner resumes them)."""
        self.stock.forget()
        stopping = [t for sid, t in self.tasks.items() if self.store.partition(sid) in partitions]
        for task in stopping:
            task.cancel()
        await asyncio.gather(*stopping, return_exceptions=True)

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
