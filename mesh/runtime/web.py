"""The worker's web server: views are Faust's (aiohttp underneath), registered per app."""

from __future__ import annotations

import types
from typing import Any

import faust
from aiohttp import web
from faust.web import Request, Response, View

__all__ = ["Request", "Response", "View", "add_listener", "add_middleware", "web_application"]


def web_application(app: faust.App) -> Any:
    """The aiohttp application ``app``'s web server serves."""
    return app.web.web_app  # type: ignore[attr-defined]


def add_middleware(app: faust.App, middleware: Any) -> None:
    """Run ``middleware`` (an aiohttp middleware) around every view of ``app``'s web
    server; before the server starts."""
    web_application(app).middlewares.append(middleware)


def add_listener(app: faust.App, host: str, port: int) -> None:
    """Serve ``app``'s web application on ``host:port`` too (started and stopped with it)."""
    server: Any = app.web
    start = server.start_server

    async def start_server(self: Any) -> None:
        await start()
        await web.TCPSite(self._runner, host, port).start()

    server.start_server = types.MethodType(start_server, server)
