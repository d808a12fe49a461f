"""The Directus source's HTTP layer: the ``/activity`` change feed and batched item reads.

Every call goes through a :class:`~mesh.retry.RetryPolicy`. Failures arrive as
:class:`~mesh.errors.SourceError` (``retriable`` for timeouts, connection errors, 5xx and
429, with the server's Retry-After) or :class:`~mesh.errors.SourceAuthError` when the
credentials are rejected. Values come back as Directus sends them (decimals as strings,
timestamps as ISO text): mapping them is :mod:`mesh.sources.mapping`'s job. Tokens and
passwords never appear in messages or logs.

Queries send ``filter`` as JSON (Directus accepts it in the query string) rather than
``filter[key][_in]=a,b``, whose comma-separated form would split string keys holding commas.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import quote, urlencode

import aiohttp
from pydantic import SecretStr

from mesh.errors import SourceAuthError, SourceError
from mesh.retry import RetryHook, RetryPolicy, parse_retry_after

__all__ = ["FEED_ACTIONS", "ActivityRow", "DirectusAuth", "DirectusClient"]

_log = logging.getLogger(__name__)

FEED_ACTIONS = ("create", "update", "delete")
"""Activity actions that change items (others: login, comment, version_save, run, ...)."""

_IDS_PER_READ = 500  # ids per items request: bounds the IN list and the response size
_MAX_GET_URL = 4000  # longer queries go in a SEARCH body (Node rejects headers > 16 KiB)
_REAUTH_CODES = frozenset({"TOKEN_EXPIRED", "INVALID_CREDENTIALS", "INVALID_TOKEN"})
_REFRESH_MARGIN_S = 30.0  # refresh this long before expiry (at most 20 % of the TTL)


@dataclass(frozen=True)
class ActivityRow:
    """One row of Directus' activity log that changed an item."""

    id: int
    action: str
    """``create``, ``update`` or ``delete``."""
    collection: str
    item: str
    """The item's primary key, always a string in Directus' activity log."""
    timestamp: datetime
    """When Directus recorded it, timezone-aware UTC."""
    delta_fields: tuple[str, ...]
    """Fields the revision changed (the keys of its ``delta``); empty for deletes, or when
    the revision is not readable."""


@dataclass(frozen=True)
class DirectusAuth:
    """How the client authenticates: a static token, or an email/password login."""

    email: str | None
    secret: SecretStr
    """The static token, or the login's password."""
    from_env: str | None = None
    """The env var(s) the credentials came from, named in errors so operators know what
    to fix (e.g. ``MESH_DIRECTUS_TOKEN``)."""

    @classmethod
    def static(cls, token: SecretStr, *, from_env: str | None = None) -> DirectusAuth:
        """A static token (a Directus user's ``token`` field), sent as a bearer token."""
        return cls(None, token, from_env)

    @classmethod
    def login(cls, email: str, password: SecretStr, *, from_env: str | None = None) -> DirectusAuth:
        """Log in with ``POST /auth/login`` and keep the access token fresh."""
        return cls(email, password, from_env)


class _Reply(NamedTuple):
    status: int
    body: Any
    """Parsed JSON, or the raw text when it is not JSON."""
    retry_after: float | None

    @property
    def code(self) -> str | None:
        """Directus' error code (``extensions.code`` of the first error)."""
        try:
            return str(self.body["errors"][0]["extensions"]["code"])
        except (KeyError, IndexError, TypeError):
            return None

    @property
    def rejected(self) -> bool:
        """The token was refused (expired, unknown or badly signed)."""
        return self.status in (401, 403) and self.code in _REAUTH_CODES


@dataclass
class _Tokens:
    access: SecretStr
    refresh: SecretStr
    refresh_at: float
    """``time.monotonic()`` after which the access token is refreshed before use."""


def error_text(body: Any) -> str:
    """Directus' error messages (with their codes) from an error response body."""
    errors = body.get("errors") if isinstance(body, dict) else None
    if not errors:
        return str(body)[:500]
    return "; ".join(
        f"{e.get('message')} [{e.get('extensions', {}).get('code', '?')}]" for e in errors
    )


def _utc(text: str) -> datetime:
    """Directus timestamps: ISO with ``Z`` on Postgres, without a zone on some databases."""
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _activity_row(row: dict[str, Any]) -> ActivityRow:
    fields: dict[str, None] = {}  # ordered set: keys of every revision's delta
    for revision in row.get("revisions") or ():
        delta = revision.get("delta") if isinstance(revision, dict) else None
        if isinstance(delta, dict):
            fields.update(dict.fromkeys(delta))
    return ActivityRow(
        id=int(row["id"]),
        action=str(row["action"]),
        collection=str(row["collection"]),
        item=str(row["item"]),
        timestamp=_utc(str(row["timestamp"])),
        delta_fields=tuple(fields),
    )


class DirectusClient:
    """Reads the activity log and items of one Directus instance.

    Use as ``async with DirectusClient(...) as client:`` or call :meth:`close`. A login
    happens on the first call (so a Directus still starting is retried like any call);
    ``logins`` and ``refreshes`` count what the client did, for metrics and tests.
    """

    def __init__(
        self,
        base_url: str,
        auth: DirectusAuth,
        *,
        timeout_s: float,
        retry: RetryPolicy,
        session: aiohttp.ClientSession | None = None,
        on_retry: RetryHook | None = None,
        should_stop: Callable[[], bool] | None = None,
        max_attempts: int | None = None,
    ) -> None:
        """``session`` is borrowed (not closed here); ``on_retry``, ``should_stop`` and
        ``max_attempts`` are passed to every :meth:`RetryPolicy.call` (sagas make one
        attempt per call: their engine retries whole steps)."""
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.timeout_s = timeout_s
        self.retry = retry
        self.on_retry = on_retry
        self.should_stop = should_stop
        self.max_attempts = max_attempts
        self.logins = 0
        self.refreshes = 0
        self._http = session
        self._owns_http = session is None
        self._tokens: _Tokens | None = None
        # Directus rotates refresh tokens: two concurrent refreshes would log us out.
        self._auth_lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if this client opened it."""
        if self._owns_http and self._http is not None:
            await self._http.close()
            self._http = None

    # -- the API the adapter uses -------------------------------------------------------

    async def activity_head(self, collections: Sequence[str]) -> int:
        """The highest activity id that created, updated or deleted an item of
        ``collections`` (0 if none). Other actions (comments, logins) are left out so the
        head is a position the feed can actually reach: lag reads 0 when caught up."""
        if not collections:
            return 0
        query = {
            "filter": {"collection": {"_in": list(collections)}, "action": {"_in": FEED_ACTIONS}},
            "sort": "-id",
            "limit": 1,
            "fields": "id",
        }
        rows = await self._read("/activity", query)
        return int(rows[0]["id"]) if rows else 0

    async def activity_page(
        self, after_id: int, collections: Sequence[str], limit: int
    ) -> list[ActivityRow]:
        """Up to ``limit`` item changes of ``collections`` with id > ``after_id``, oldest first."""
        if not collections:
            return []
        query = {
            "filter": {
                "id": {"_gt": after_id},
                "collection": {"_in": list(collections)},
                "action": {"_in": FEED_ACTIONS},
            },
            "sort": "id",
            "limit": limit,
            "fields": "id,action,collection,item,timestamp,revisions.delta",
        }
        return [_activity_row(row) for row in await self._read("/activity", query)]

    async def items_by_ids(
        self, collection: str, key: str, ids: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        """The items whose ``key`` is in ``ids``, by ``str(item[key])``; ids that no longer
        exist are absent. Reads at most 500 ids a request."""
        wanted = list(dict.fromkeys(str(i) for i in ids))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), _IDS_PER_READ):
            chunk = wanted[start : start + _IDS_PER_READ]
            query = {"filter": {key: {"_in": chunk}}, "limit": -1, "fields": "*"}
            for item in await self._read(self._items_path(collection), query):
                found[str(item[key])] = item
        return found

    async def items_after(
        self, collection: str, key: str, after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """One keyset page for snapshots: up to ``limit`` items with ``key > after``
        (all when ``after`` is None), sorted by ``key``."""
        query: dict[str, Any] = {"sort": key, "limit": limit, "fields": "*"}
        if after is not None:
            query["filter"] = {key: {"_gt": after}}
        return await self._read(self._items_path(collection), query)

    # -- the API sagas write with (with their own role and token) ------------------------

    async def items_where(
        self, collection: str, where: dict[str, Any], *, fields: str = "*", limit: int = -1
    ) -> list[dict[str, Any]]:
        """The items matching the Directus ``filter`` ``where``."""
        query = {"filter": where, "limit": limit, "fields": fields}
        return await self._read(self._items_path(collection), query)

    async def create_item(self, collection: str, values: dict[str, Any]) -> dict[str, Any]:
        """Create one item; its stored values. A duplicate in a unique field raises
        :class:`SourceError` with ``code == "RECORD_NOT_UNIQUE"``."""
        return dict(await self._call("POST", self._items_path(collection), body=values) or {})

    async def update_item(
        self, collection: str, item_id: str | int, values: dict[str, Any]
    ) -> dict[str, Any]:
        """Update one item by primary key; its stored values."""
        path = f"{self._items_path(collection)}/{quote(str(item_id), safe='')}"
        return dict(await self._call("PATCH", path, body=values) or {})

    # -- requests -------------------------------------------------------------------------

    def _where(self, method: str, path: str) -> str:
        return f"Directus {method} {self.base_url}{path}"

    @staticmethod
    def _items_path(collection: str) -> str:
        return f"/items/{quote(collection, safe='')}"

    async def _read(self, path: str, query: dict[str, Any]) -> list[dict[str, Any]]:
        """A read query: GET with the query in the URL, or SEARCH with it in the body when
        the URL would be too long (Directus 10.10 supports SEARCH on ``/items``)."""
        params = {k: json.dumps(v) if k == "filter" else str(v) for k, v in query.items()}
        if len(urlencode(params)) + len(self.base_url) + len(path) <= _MAX_GET_URL:
            data = await self._call("GET", path, params=params)
        else:
            data = await self._call("SEARCH", path, body={"query": query})
        return list(data or [])

    async def _call(
        self, method: str, path: str, *, params: dict[str, str] | None = None, body: Any = None
    ) -> Any:
        """One authenticated API call through the retry policy; returns its ``data``."""

        async def attempt() -> Any:
            token = await self._access_token()
            reply = await self._send(method, path, params=params, body=body, token=token)
            if reply.rejected and self.auth.email is not None:
                # Expired or revoked (e.g. Directus' SECRET changed): re-authenticate once.
                await self._forget(token)
                token = await self._access_token()
                reply = await self._send(method, path, params=params, body=body, token=token)
            if reply.rejected:
                raise self._auth_error(reply)
            return self._data(method, path, reply)

        return await self.retry.call(
            attempt,
            on_retry=self.on_retry,
            should_stop=self.should_stop,
            max_attempts=self.max_attempts,
        )

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        token: str | None = None,
    ) -> _Reply:
        """One HTTP request; transport failures become retriable :class:`SourceError`."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        where = self._where(method, path)
        try:
            async with self._http.request(
                method,
                self.base_url + path,
                params=params,
                json=body,
                headers=headers,
                timeout=timeout,
            ) as resp:
                text = await resp.text()
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                status = resp.status
        except TimeoutError:
            raise SourceError(
                f"{where}: no answer within {self.timeout_s:g} s", retriable=True
            ) from None
        except aiohttp.ClientError as exc:
            raise SourceError(f"{where}: {type(exc).__name__}: {exc}", retriable=True) from None
        try:
            parsed: Any = json.loads(text) if text else None
        except ValueError:
            parsed = text
        return _Reply(status, parsed, retry_after)

    def _data(self, method: str, path: str, reply: _Reply) -> Any:
        """The reply's ``data``, or the :class:`SourceError` Directus' answer means."""
        where = self._where(method, path)
        if 200 <= reply.status < 300:
            if reply.status == 204:
                return None
            if not isinstance(reply.body, dict):
                raise SourceError(f"{where}: the answer is not Directus JSON; check the URL")
            return reply.body.get("data")
        message = error_text(reply.body)
        if reply.status == 403 and reply.code == "FORBIDDEN":
            message += " (the collection does not exist, or the role may not read it)"
        retriable = reply.status >= 500 or reply.status in (408, 429)
        raise SourceError(
            f"{where} failed ({reply.status}): {message}",
            retriable=retriable,
            status=reply.status,
            retry_after=reply.retry_after if retriable else None,
            code=reply.code,
        )

    # -- authentication -------------------------------------------------------------------

    async def _access_token(self) -> str:
        """The bearer token to send: the static one, or a fresh login/refreshed token."""
        if self.auth.email is None:
            return self.auth.secret.get_secret_value()
        async with self._auth_lock:
            tokens = self._tokens
            if tokens is None or time.monotonic() >= tokens.refresh_at:
                refreshed = await self._refresh(tokens) if tokens else None
                tokens = self._tokens = refreshed or await self._login()
            return tokens.access.get_secret_value()

    async def _forget(self, token: str) -> None:
        """Mark ``token`` stale so the next call refreshes (unless another call already did)."""
        async with self._auth_lock:
            if self._tokens is not None and self._tokens.access.get_secret_value() == token:
                self._tokens.refresh_at = -math.inf

    async def _login(self) -> _Tokens:
        email = self.auth.email
        body = {"email": email, "password": self.auth.secret.get_secret_value(), "mode": "json"}
        sent = time.monotonic()
        reply = await self._send("POST", "/auth/login", body=body)
        if reply.status in (400, 401, 403):
            raise self._auth_error(reply)
        tokens = self._tokens_from(self._data("POST", "/auth/login", reply), sent)
        self.logins += 1
        _log.info("logged in to Directus at %s as %s", self.base_url, email)
        return tokens

    async def _refresh(self, tokens: _Tokens) -> _Tokens | None:
        """New tokens from the refresh token; None when Directus refuses it (log in again)."""
        body = {"refresh_token": tokens.refresh.get_secret_value(), "mode": "json"}
        sent = time.monotonic()
        reply = await self._send("POST", "/auth/refresh", body=body)
        if 400 <= reply.status < 500 and reply.status not in (408, 429):
            _log.info("Directus at %s refused the refresh token; logging in", self.base_url)
            return None
        fresh = self._tokens_from(self._data("POST", "/auth/refresh", reply), sent)
        self.refreshes += 1
        return fresh

    def _tokens_from(self, data: Any, sent: float) -> _Tokens:
        """Tokens from a login/refresh answer; ``sent`` is when the request left."""
        try:
            ttl = float(data["expires"]) / 1000  # milliseconds
            access, refresh = str(data["access_token"]), str(data["refresh_token"])
        except (KeyError, TypeError, ValueError):
            raise SourceError(
                f"Directus at {self.base_url} sent no tokens; check the URL"
            ) from None
        margin = min(_REFRESH_MARGIN_S, ttl * 0.2)
        return _Tokens(SecretStr(access), SecretStr(refresh), refresh_at=sent + ttl - margin)

    def _auth_error(self, reply: _Reply) -> SourceAuthError:
        what = "static token" if self.auth.email is None else f"login of {self.auth.email}"
        fix = self.auth.from_env or (
            "the source's token_env" if self.auth.email is None else "email_env/password_env"
        )
        return SourceAuthError(
            f"Directus at {self.base_url} rejected the {what} ({reply.status}: "
            f"{error_text(reply.body)}); set valid credentials in {fix} and restart",
            status=reply.status,
        )
