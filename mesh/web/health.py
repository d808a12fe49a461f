"""Liveness and readiness: ``/healthz`` answers while the process serves HTTP;
``/readyz`` only once the worker has joined the group and recovered its tables."""

from __future__ import annotations

from typing import Any

import faust
from faust.web import Request, Response, View

from mesh.context import MeshContext


def readiness(app: faust.App) -> dict[str, Any]:
    """The worker's readiness and the facts it is decided from."""
    # TableManager has `recovery` at run time; its declared interface omits it.
    recovered = bool(app.tables.recovery.completed.is_set())  # type: ignore[attr-defined]
    rebalancing = bool(app.rebalancing)
    assigned = len(app.assignor.assigned_actives()) if recovered else 0
    return {
        "ready": recovered and not rebalancing,
        "tables_recovered": recovered,
        "rebalancing": rebalancing,
        "active_partitions": assigned,
    }


def register_health_views(context: MeshContext) -> None:
    """Register ``/healthz`` and ``/readyz``."""
    app = context.app
    worker = context.settings.worker_name

    @app.page("/healthz")
    class Health(View):  # type: ignore[misc]
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "worker": worker})

    @app.page("/readyz")
    class Ready(View):  # type: ignore[misc]
        async def get(self, request: Request) -> Response:
            state = readiness(app)
            return self.json(
                {"status": "ready" if state["ready"] else "starting", "worker": worker, **state},
                status=200 if state["ready"] else 503,
            )
