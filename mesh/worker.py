"""``mesh worker``: run one worker of the fleet until SIGINT/SIGTERM."""

from __future__ import annotations

import logging

from faust.worker import Worker

from mesh.app import create_app
from mesh.schemas import load_event_schemas
from mesh.settings import Settings


class MeshWorker(Worker):  # type: ignore[misc]
    """Faust's worker without its terminal spinner.

    The spinner's handler listens at DEBUG, which makes every library format its debug
    records (a tenth of the catalog's CPU time); a service's logs are not a terminal.
    """

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)


def run_worker(settings: Settings) -> int:
    """Validate the config, build the app and run it; return the exit code."""
    app = create_app(settings)
    # Fail before joining the group when schemas and config disagree.
    load_event_schemas(app.mesh.domain, settings.schemas_dir)
    worker = MeshWorker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()  # returns only via SystemExit
    return 0
