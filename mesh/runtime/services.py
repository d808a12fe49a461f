"""Long-running parts of a worker (the catalog ingestor, source supervisor, mirror, cache):
services started and stopped with the worker's app, in the order they were added.

Stopping has two phases. On SIGTERM or SIGINT the worker first *drains* every service
(:meth:`Service.drain`: stop taking work, finish what is in flight) while the app's
consumer, producer and tables still run, so finished work is acknowledged and committed;
then the app stops them. Without the first phase a service would lose its producer or
tables in the middle of a batch.
"""

from __future__ import annotations

import asyncio
import logging

import faust
import mode
from faust.types import AppT

__all__ = ["DRAIN_TIMEOUT_S", "Service", "add_service", "drain_services"]

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 30.0
"""How long the services may take to drain before the app stops anyway (a StatefulSet's
grace period is 60 s: the app's own stop and the exit need the rest)."""


class Service(mode.Service):
    """A part of the worker that runs as long as the app does."""

    async def drain(self) -> None:
        """Stop taking new work and finish the work in flight (the app still runs)."""


def add_service(app: faust.App, service: type[Service]) -> None:
    """Run ``service`` (a class, instantiated by the app) for as long as ``app`` runs."""
    app.service(service)


async def drain_services(app: AppT, timeout: float = DRAIN_TIMEOUT_S) -> None:
    """Drain every running service of ``app`` at once, for up to ``timeout`` seconds."""
    # The instances faust made of the classes given to add_service().
    instances = getattr(app, "_extra_service_instances", None) or ()
    services = [s for s in instances if isinstance(s, Service)]
    if not services:
        return
    started = asyncio.get_running_loop().time()
    tasks = [asyncio.ensure_future(service.drain()) for service in services]
    done, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    for service, task in zip(services, tasks, strict=True):
        if task in pending:
            log.warning("%s did not drain within %.0f s; stopping it anyway", service, timeout)
        elif task.exception() is not None:
            log.warning("%s failed to drain", service, exc_info=task.exception())
    took = asyncio.get_running_loop().time() - started
    log.info("drained %d services in %.2f s", len(done), took)
