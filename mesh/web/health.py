"""Liveness and readiness: ``/healthz`` answers while the process serves HTTP;
``/readyz`` only once the worker has joined the group and recovered its tables."""

from __future__ import annotations

from typing import Any

from mesh.context import MeshContext
from mesh.runtime.membership import Membership
from mesh.runtime.web import Request, Response, View


def readiness(membership: Membership) -> dict[str, Any]:
    """The worker's readiness and the facts it is decided from."""
    recovered = membership.tables_recovered()
    rebalancing = membership.rebalancing()
    stopping = membership.stopping()
    return {
        "ready": recovered and not rebalancing and not stopping,
        "tables_recovered": recovered,
        "rebalancing": rebalancing,
        "stopping": stopping,
        "active_partitions": membership.active_count() if recovered else 0,
    }


def register_health_views(context: MeshContext) -> None:
    """Register ``/healthz`` and ``/readyz``."""
    app = context.app
    worker = context.settings.worker_name
    auth = context.settings.auth  # "off" says loudly that anyone may read anything

    @app.page("/healthz")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "worker": worker})

    @app.page("/readyz")
    class Ready(View):
        async def get(self, request: Request) -> Response:
            state = readiness(context.membership)
            return self.json(
                {
                    "status": "ready" if state["ready"] else "starting",
                    "worker": worker,
                    "auth": auth,
                    **state,
                },
                status=200 if state["ready"] else 503,
            )
