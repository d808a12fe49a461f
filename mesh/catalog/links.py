"""Batched key reads between workers over one WebSocket per peer: the cheap peer hop.

A GraphQL request that reads other workers' keys makes one batch per owner and nesting
level (:mod:`mesh.graphql.loader`). Over HTTP each batch is a whole request: a client
request with its tracing hooks, the fleet signature made and checked, the server's
middlewares, headers both ways — about a millisecond of CPU on this class of machine
against ~0.2 ms for a message on a connection that is already open and authenticated.
So each worker keeps one WebSocket to every peer it reads from
(``GET /api/v1/internal/entities/link``, signed with the fleet secret like every peer
call: the gate checks the upgrade once) and sends the batches as messages, each
``{"id", "tenant", "keys"}``, answered ``{"id", "results"}`` in the same shape as
``POST /api/v1/internal/entities`` (or ``{"id", "error"}``).

A link that cannot be opened or breaks fails the batches waiting on it with
:class:`UnavailableError` (the loader then tries its standby replicas, as for HTTP) and
is opened again by the next batch. A peer without the endpoint (an older version during
a rolling upgrade) is asked over HTTP instead, until the fleet next rebalances.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from aiohttp import web

from mesh.errors import UnavailableError
from mesh.runtime.services import Service, add_service

if TYPE_CHECKING:
    from mesh.catalog.router import FleetRouter
    from mesh.context import MeshContext

log = logging.getLogger(__name__)
LINK_PATH = "/api/v1/internal/entities/link"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest answer a link accepts: 10,000 records (the batch limit) of a few KB each."""


Answer = Callable[[Any, bytes], tuple[bytes, "str | None"]]
"""What a served link does with a message: the request it came on and the message give
the results (JSON bytes) or why it is refused."""


class NoLinkError(Exception):
    """The peer has no link endpoint: ask it over HTTP."""


class PeerLink:
    """One WebSocket to one peer, shared by every request of this worker."""

    def __init__(self, router: FleetRouter, url: str) -> None:
        self.router = router
        self.url = url
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._opening: asyncio.Lock = asyncio.Lock()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)

    async def read(self, body: dict[str, Any], timeout_s: float) -> Any:
        """The decoded answer to ``body`` (``{"tenant", "keys"}``); :class:`UnavailableError`
        when the peer does not answer within ``timeout_s``, :class:`NoLinkError` when it
        has no link endpoint."""
        ws = await self._open(timeout_s)
        number = next(self._ids)
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[number] = answer
        try:
            await ws.send_bytes(orjson.dumps({**body, "id": number}))
            async with asyncio.timeout(timeout_s):
                return await answer
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise UnavailableError(f"the link to {self.url} broke: {exc!r}") from None
        except TimeoutError:
            raise UnavailableError(f"the worker at {self.url} did not answer in time") from None
        finally:
            self._waiting.pop(number, None)

    async def _open(self, timeout_s: float) -> aiohttp.ClientWebSocketResponse:
        ws = self._ws
        if ws is not None and not ws.closed:
            return ws
        async with self._opening:
            if self._ws is not None and not self._ws.closed:
                return self._ws
            target, headers = self.router.peer_target(self.url, LINK_PATH, "GET", b"")
            try:
                ws = await self._connect(target, headers, timeout_s)
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status == 404:
                    raise NoLinkError from None
                raise UnavailableError(
                    f"the worker at {self.url} refused a link: {exc.status}"
                ) from None
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise UnavailableError(
                    f"the worker at {self.url} did not answer: {type(exc).__name__}"
                ) from None
            self._ws = ws
            self._reader = asyncio.get_running_loop().create_task(self._read_answers(ws))
            return ws

    async def _connect(
        self, target: Any, headers: dict[str, str], timeout_s: float
    ) -> aiohttp.ClientWebSocketResponse:
        async with asyncio.timeout(timeout_s):
            return await self.router.context.app.http_client.ws_connect(
                target, headers=headers, max_msg_size=MAX_MESSAGE_BYTES, autoping=True
            )

    async def _read_answers(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        why = "closed"
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.BINARY:
                    continue
                try:
                    answer = orjson.loads(message.data)
                    waiter = self._waiting.get(answer["id"])
                except (ValueError, KeyError, TypeError):
                    log.warning("the link to %s sent nonsense; closing it", self.url)
                    break
                if waiter is not None and not waiter.done():
                    waiter.set_result(answer)
        except (aiohttp.ClientError, ConnectionError) as exc:
            why = repr(exc)
        finally:
            # Whatever ended the link, nobody may wait for an answer that cannot come.
            for waiter in self._waiting.values():
                if not waiter.done():
                    waiter.set_exception(
                        UnavailableError(f"the link to {self.url} {why} mid-request")
                    )
            if not ws.closed:
                await ws.close()

    async def close(self) -> None:
        """Close the WebSocket (pending reads fail as unavailable)."""
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


def serve_links(web_app: Any, path: str, answer: Answer) -> None:
    """Serve links at ``path`` of ``web_app`` (the worker's aiohttp application, before it
    starts): each message is answered ``{"id", "results": answer's bytes}`` or
    ``{"id", "error"}``, in the order they come. Links still open when the server shuts
    down are closed rather than waited for."""
    open_links: set[web.WebSocketResponse] = set()

    async def link(request: web.Request) -> web.StreamResponse:
        # The gate checked the fleet's signature on the upgrade: every message on this
        # socket is the fleet's.
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        open_links.add(ws)
        try:
            async for message in ws:
                if message.type != aiohttp.WSMsgType.BINARY:
                    continue
                number = _number(message.data)
                results, problem = answer(request, message.data)
                if problem is not None:
                    await ws.send_bytes(orjson.dumps({"id": number, "error": problem}))
                else:
                    head = b'{"id":' + orjson.dumps(number) + b',"results":'
                    await ws.send_bytes(head + results + b"}")
        finally:
            open_links.discard(ws)
        return ws

    async def close_links(_: web.Application) -> None:
        await asyncio.gather(*(ws.close() for ws in list(open_links)), return_exceptions=True)

    web_app.router.add_get(path, link)
    web_app.on_shutdown.append(close_links)


def _number(raw: bytes) -> int | None:
    """The ``id`` of a link message (``None`` when it has none)."""
    try:
        number = orjson.loads(raw).get("id")
    except (ValueError, AttributeError):
        return None
    return number if isinstance(number, int) else None


def links_of(context: MeshContext) -> PeerLinks:
    """The worker's links (see :func:`register_peer_links`)."""
    links: PeerLinks = context.links
    return links


class PeerLinks:
    """This worker's links, one per peer, opened on first use."""

    def __init__(self) -> None:
        self._links: dict[str, PeerLink] = {}
        self._http_only: set[str] = set()

    def link(self, router: FleetRouter, url: str) -> PeerLink | None:
        """The link to the worker at ``url``; ``None`` for a peer without the endpoint."""
        if url in self._http_only:
            return None
        found = self._links.get(url)
        if found is None:
            found = self._links[url] = PeerLink(router, url)
        return found

    def http_only(self, url: str) -> None:
        """The worker at ``url`` has no link endpoint: use HTTP with it until
        :meth:`forget`."""
        self._http_only.add(url)

    def forget(self) -> None:
        """The fleet rebalanced: peers may have been upgraded (or replaced)."""
        self._http_only.clear()

    async def close(self) -> None:
        """Close every link."""
        links, self._links = list(self._links.values()), {}
        await asyncio.gather(*(link.close() for link in links), return_exceptions=True)


def register_peer_links(context: MeshContext) -> None:
    """Give the worker its links (``context.links``); close them when it stops; after a
    rebalance, try links again with peers that had none."""
    links = context.links = PeerLinks()

    class _Links(Service):
        async def on_start(self) -> None:
            revoked = context.app.on_partitions_revoked
            revoked.connect(self._on_revoked)  # type: ignore[arg-type]

        async def _on_revoked(self, sender: Any, *args: Any, **kwargs: Any) -> None:
            links.forget()

        async def on_stop(self) -> None:
            await links.close()

    add_service(context.app, _Links)
