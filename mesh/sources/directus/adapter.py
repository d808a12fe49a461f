"""The Directus adapter: snapshot every item once, then follow ``/activity``.

The cursor is ``{"position": <activity id>, "snapshot": {...} | None}``. With no cursor
the adapter records the activity head first, snapshots every collection by keyset pages
(``SNAPSHOT`` events carrying that head as their version), then follows the activity log
from that head, so nothing changed during the snapshot is missed. Following reads one
page of activity, fetches the items it names in one batch per collection, and emits
``CREATE``/``UPDATE``/``DELETE`` in activity order; an item gone before it could be read
becomes a ``DELETE``, an item that does not fit its schema a dead letter.

Deleting an item in Directus can change other items without any activity: the database's
``ON DELETE SET NULL`` (or ``CASCADE``) clears (or deletes) the rows pointing at it. So a
delete of an entity that others reference is remembered in the cursor (``"refresh"``);
a little later (:data:`REFRESH_AFTER_S`, so the catalog has folded the recent changes) the
adapter asks the catalog which entities pointed at it, reads them again and emits what
changed, versioned at the delete's position.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from typing import Any

from pydantic import SecretStr

from mesh.domain import DomainConfig, EntitySpec, SourceSpec
from mesh.errors import MeshError, SourceAuthError, SourceDataError
from mesh.retry import RetryPolicy
from mesh.sources.base import Cursor, PollResult, Reread, SourceAdapter
from mesh.sources.directus.client import ActivityRow, DirectusAuth, DirectusClient
from mesh.sources.events import ChangeEvent, DeadLetter, Op
from mesh.sources.mapping import map_item
from mesh.sources.metrics import AdapterState
from mesh.sources.rereads import RereadRequest

log = logging.getLogger(__name__)

REFRESH_AFTER_S = 2.0
"""Delay between a referenced entity's delete and re-reading what pointed at it."""


def auth_from_env(spec: SourceSpec) -> DirectusAuth:
    """The adapter's credentials, from the env vars the source config names."""
    if spec.token_env:
        token = os.environ.get(spec.token_env, "").strip()
        if token:
            return DirectusAuth.static(SecretStr(token), from_env=spec.token_env)
    if spec.email_env and spec.password_env:
        email = os.environ.get(spec.email_env, "").strip()
        password = os.environ.get(spec.password_env, "")
        if email and password:
            return DirectusAuth.login(email, SecretStr(password), from_env=spec.email_env)
    wanted = spec.token_env or f"{spec.email_env} and {spec.password_env}"
    raise SourceAuthError(f"source '{spec.name}': no credentials; set {wanted}")


class DirectusAdapter(SourceAdapter):
    """Change capture for one Directus instance."""

    def __init__(self, spec: SourceSpec, domain: DomainConfig) -> None:
        super().__init__(spec, domain)
        self.by_collection: dict[str, tuple[str, EntitySpec]] = {
            entity.collection: (name, entity) for name, entity in self.entities.items()
        }
        self.collections = sorted(self.by_collection)
        # Per entity type: the (child type, field) pairs referencing it, from any source.
        self.referenced_by: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for child, child_spec in domain.entities.items():
            for field, field_spec in child_spec.fields.items():
                if field_spec.references is not None:
                    self.referenced_by[field_spec.references].append((child, field))
        self._client: DirectusClient | None = None

    @property
    def client(self) -> DirectusClient:
        """The HTTP client (after :meth:`start`)."""
        if self._client is None:
            raise RuntimeError("DirectusAdapter.poll() before start()")
        return self._client

    async def start(self) -> None:
        spec = self.spec
        self._client = DirectusClient(
            spec.url,
            auth_from_env(spec),
            timeout_s=spec.request_timeout_s,
            retry=RetryPolicy(spec.backoff_base_ms / 1000, spec.backoff_max_ms / 1000),
            on_retry=self._report_retry,
            should_stop=lambda: self.should_stop(),
        )

    def _report_retry(self, error: MeshError, attempt: int, delay: float) -> None:
        if self.on_retry is not None:
            self.on_retry(error, attempt, delay)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def heads(self) -> dict[str, int]:
        return {c: await self.client.activity_head([c]) for c in self.collections}

    async def poll(self, cursor: Cursor | None) -> PollResult:
        if cursor is None:
            head = await self.client.activity_head(self.collections)
            snapshot = {"index": 0, "after": None} if self.collections else None
            # Stored before any item is read: the feed resumes from here after the snapshot.
            return PollResult(
                {"position": head, "snapshot": snapshot}, more=True, state=AdapterState.SNAPSHOT
            )
        if cursor.get("snapshot"):
            return await self._snapshot_page(cursor)
        return await self._follow(cursor)

    async def _snapshot_page(self, cursor: Cursor) -> PollResult:
        position = int(cursor["position"])
        snapshot: dict[str, Any] | None = dict(cursor["snapshot"])
        assert snapshot is not None
        collection = self.collections[snapshot["index"]]
        name, entity = self.by_collection[collection]
        page_size = self.spec.page_size
        items = await self.client.items_after(collection, entity.key, snapshot["after"], page_size)
        result = PollResult(cursor, more=True, state=AdapterState.SNAPSHOT)
        for item in items:
            self._emit(result, name, entity, Op.SNAPSHOT, position, None, item, None)
        if len(items) == page_size:
            snapshot["after"] = str(items[-1][entity.key])
        elif snapshot["index"] + 1 < len(self.collections):
            snapshot = {"index": snapshot["index"] + 1, "after": None}
        else:
            snapshot = None
        result.cursor = {"position": position, "snapshot": snapshot}
        return result

    async def _follow(self, cursor: Cursor) -> PollResult:
        position = int(cursor["position"])
        page_size = self.spec.page_size
        now = time.time()
        refresh: list[dict[str, Any]] = list(cursor.get("refresh") or [])
        due = [r for r in refresh if r["due"] <= now]
        rows = await self.client.activity_page(position, self.collections, page_size)
        if not rows and not due:
            return PollResult(cursor)
        wanted: dict[str, list[str]] = defaultdict(list)
        for row in rows:
            if row.action != "delete":
                wanted[row.collection].append(row.item)
        items = {
            collection: await self.client.items_by_ids(
                collection, self.by_collection[collection][1].key, sorted(set(ids))
            )
            for collection, ids in wanted.items()
        }
        later = [r for r in refresh if r["due"] > now]
        result = PollResult(
            {"position": rows[-1].id if rows else position, "snapshot": None, "refresh": later},
            more=len(rows) == page_size,
        )
        if due:
            await self._refresh(result, due)
        for row in rows:
            name, entity = self.by_collection[row.collection]
            item = items.get(row.collection, {}).get(row.item)
            if row.action == "delete" or item is None:
                # Also when the item vanished before it could be read: its delete follows.
                self._emit(result, name, entity, Op.DELETE, row.id, row, None, row.item)
                if row.action == "delete" and self.referenced_by.get(name):
                    later.append(
                        {"type": name, "id": row.item, "position": row.id,
                         "due": now + REFRESH_AFTER_S}
                    )  # fmt: skip
            else:
                op = Op.CREATE if row.action == "create" else Op.UPDATE
                self._emit(result, name, entity, op, row.id, row, item, None)
        return result

    async def reread(self, requests: list[RereadRequest]) -> Reread:
        """Read the requested items as they are now, as ``UPDATE`` events of every field
        versioned at the request's position (the dead letter's activity id): never newer
        than a change the feed may still bring, so the version guard keeps the newest.
        An item gone meanwhile becomes a ``DELETE``, as in the feed."""
        wanted: dict[str, list[RereadRequest]] = defaultdict(list)
        for request in requests:
            if request.collection in self.by_collection:
                wanted[request.collection].append(request)
            else:
                log.warning("source %s has no collection %r; re-read of %s dropped",
                            self.spec.name, request.collection, request.item)  # fmt: skip
        result = PollResult({})
        for collection, asked in wanted.items():
            name, entity = self.by_collection[collection]
            items = await self.client.items_by_ids(collection, entity.key, [r.item for r in asked])
            head: int | None = None
            for request in asked:
                position = request.position
                if position is None:  # not said: what is read now is as of the head
                    head = (
                        head if head is not None else await self.client.activity_head([collection])
                    )
                    position = head
                item = items.get(request.item)
                if item is None:
                    self._emit(result, name, entity, Op.DELETE, position, None, None, request.item)
                else:
                    fields = tuple(entity.fields)
                    self._emit(result, name, entity, Op.UPDATE, position, None, item, None, fields)
        return Reread(result.events, result.dead_letters)

    async def _refresh(self, result: PollResult, due: list[dict[str, Any]]) -> None:
        """Emit what the deletes in ``due`` changed silently in the entities pointing at them."""
        if self.children is None:
            return
        for deleted in due:
            parent, parent_id, position = deleted["type"], deleted["id"], deleted["position"]
            children = await self.children(parent, parent_id)
            for child, ids in sorted(children.items()):
                entity = self.entities.get(child)
                if entity is None or not ids:
                    continue  # another source's entities: that adapter reads its own
                fields = tuple(f for c, f in self.referenced_by[parent] if c == child)
                items = await self.client.items_by_ids(entity.collection, entity.key, ids)
                for child_id in ids:
                    item = items.get(child_id)
                    if item is None:  # deleted with its parent (ON DELETE CASCADE)
                        self._emit(result, child, entity, Op.DELETE, position, None, None, child_id)
                    elif all(str(item.get(f)) != parent_id for f in fields):
                        self._emit(
                            result, child, entity, Op.UPDATE, position, None, item, None, fields
                        )

    def _emit(
        self,
        result: PollResult,
        name: str,
        entity: EntitySpec,
        op: Op,
        position: int,
        row: ActivityRow | None,
        item: dict[str, Any] | None,
        item_id: str | None,
        changed_fields: tuple[str, ...] | None = None,
    ) -> None:
        collection = entity.collection
        after = None
        changed: tuple[str, ...] = ()
        if item is not None:
            item_id = str(item.get(entity.key))
            try:
                after = map_item(name, entity, item)
            except SourceDataError as exc:
                payload = json.dumps(item, default=str).encode()
                result.dead_letters.append(
                    DeadLetter(self.spec.name, collection, item_id, position, exc, payload)
                )
                return
            if changed_fields is not None:
                changed = changed_fields
            elif op is Op.UPDATE and row is not None:
                changed = tuple(f for f in row.delta_fields if f in entity.fields)
            else:
                changed = tuple(entity.fields)
        assert item_id is not None
        result.events.append(
            ChangeEvent(
                entity_type=name,
                entity_id=item_id,
                op=op,
                collection=collection,
                position=position,
                source_timestamp=row.timestamp if row is not None else None,
                after=after,
                changed_fields=changed,
            )
        )
