"""``mesh worker``: run one worker of the fleet until SIGINT/SIGTERM."""

from __future__ import annotations

from faust.worker import Worker

from mesh.app import create_app
from mesh.schemas import load_event_schemas
from mesh.settings import Settings


def run_worker(settings: Settings) -> int:
    """Validate the config, build the app and run it; return the exit code."""
    app = create_app(settings)
    # Fail before joining the group when schemas and config disagree.
    load_event_schemas(app.mesh.domain, settings.schemas_dir)
    worker = Worker(app, loglevel=settings.log_level, quiet=True)
    worker.execute_from_commandline()  # returns only via SystemExit
    return 0
