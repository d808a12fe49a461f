"""The dev issuer's JWKS served over HTTP, as an identity provider publishes its keys:
``GET /.well-known/jwks.json``. The dev stack's worker verifies tokens against it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from mesh_tooling.dev.issuer import DevIssuer

JWKS_PATH = "/.well-known/jwks.json"


async def serve_jwks(issuer: DevIssuer, host: str, port: int) -> Callable[[], Awaitable[None]]:
    """Serve ``issuer``'s JWKS on ``host:port``; returns the coroutine function that stops it."""
    document = issuer.jwks()

    async def jwks(request: web.Request) -> web.Response:
        return web.json_response(document)

    app = web.Application()
    app.router.add_get(JWKS_PATH, jwks)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner.cleanup
