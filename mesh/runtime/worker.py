"""Run a built Faust app as one worker of the fleet until SIGINT/SIGTERM."""

from __future__ import annotations

import logging

import faust
from faust.worker import Worker

from mesh.runtime.services import drain_services


class _Worker(Worker):
    """Faust's worker without its terminal spinner, draining the services first on stop.

    The spinner's handler listens at DEBUG, which makes every library format its debug
    records (a tenth of the catalog's CPU time); a service's logs are not a terminal.
    """

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)

    async def on_stop(self) -> None:
        # Before the app (a child) stops its consumer, producer and tables.
        await drain_services(self.app)
        await super().on_stop()


def run_faust_worker(app: faust.App, log_level: str) -> int:
    """Run ``app`` until it is stopped; returns the exit code."""
    worker = _Worker(app, loglevel=log_level, quiet=True)
    worker.execute_from_commandline()  # returns only via SystemExit
    return 0
