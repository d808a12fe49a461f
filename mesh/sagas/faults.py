"""A crash hook for tests: SIGKILL this worker at a named point of a saga, once.

Off unless ``MESH_SAGA_CRASH_AT`` names a point (``<EVENT>:<step>`` right after that
transition was persisted, e.g. ``STEP_STARTED:reserve_stock``, or a point inside a step's
effects, e.g. ``reserve:row_created``) and ``MESH_SAGA_CRASH_MARKER`` names a file: the
worker creates the file and kills itself, so the worker restarted with the same settings
goes on. Never set in production.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

__all__ = ["FaultPoints"]

log = logging.getLogger(__name__)


class FaultPoints:
    """Where (if anywhere) this worker kills itself."""

    def __init__(self, crash_at: str | None, marker: Path | None) -> None:
        self.crash_at = crash_at if marker is not None else None
        self.marker = marker

    def reached(self, point: str) -> None:
        """Kill this worker if ``point`` is the configured one and it has not fired yet."""
        if self.crash_at != point or self.marker is None or self.marker.exists():
            return
        self.marker.write_text(point)
        log.warning("saga crash hook: killing this worker at %s", point)
        os.kill(os.getpid(), signal.SIGKILL)
