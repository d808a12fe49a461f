"""Errors of the Postgres mirror."""

from __future__ import annotations

from mesh.errors import MeshError

__all__ = ["MirrorDatabaseError", "MirrorGrantError"]


class MirrorDatabaseError(MeshError):
    """Postgres could not take a batch (down, restarting, connection lost, schema broken).

    Always ``retriable`` (:class:`~mesh.retry.RetryPolicy` retries it): the batch is
    written again after a backoff on a fresh connection (which re-runs the idempotent
    migrations, repairing e.g. a table dropped by hand).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, retriable=True)


class MirrorGrantError(MeshError):
    """``mesh mirror grant`` cannot or may not grant what was asked (the message says why
    and what to do); nothing of the grant was applied."""
