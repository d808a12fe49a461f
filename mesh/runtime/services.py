"""Long-running parts of a worker (the catalog ingestor, source supervisor, mirror, cache):
services started and stopped with the worker's app, in the order they were added."""

from __future__ import annotations

import faust
from mode import Service

__all__ = ["Service", "add_service"]


def add_service(app: faust.App, service: type[Service]) -> None:
    """Run ``service`` (a class, instantiated by the app) for as long as ``app`` runs."""
    app.service(service)
