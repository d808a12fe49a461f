"""The worker's web server: views are Faust's (aiohttp underneath), registered per app."""

from __future__ import annotations

from typing import Any

import faust
from faust.web import Request, Response, View

__all__ = ["Request", "Response", "View", "add_middleware"]


def add_middleware(app: faust.App, middleware: Any) -> None:
    """Run ``middleware`` (an aiohttp middleware) around every view of ``app``'s web
    server; before the server starts."""
    app.web.web_app.middlewares.append(middleware)  # type: ignore[attr-defined]
