"""The worker's web server: views are Faust's (aiohttp underneath), registered per app."""

from __future__ import annotations

from faust.web import Request, Response, View

__all__ = ["Request", "Response", "View"]
