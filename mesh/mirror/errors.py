"""Errors of the Postgres mirror."""

from __future__ import annotations

from mesh.errors import SourceError

__all__ = ["MirrorDatabaseError"]


class MirrorDatabaseError(SourceError):
    """Postgres could not take a batch (down, restarting, connection lost, schema broken).

    A :class:`~mesh.errors.SourceError` so that :class:`~mesh.sources.retry.RetryPolicy`
    retries it: to the mirror, Postgres is the system it depends on, exactly as Directus
    is to an adapter. Always ``retriable``: the batch is written again after a backoff on
    a fresh connection (which re-runs the idempotent migrations, repairing e.g. a table
    dropped by hand).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, retriable=True)
