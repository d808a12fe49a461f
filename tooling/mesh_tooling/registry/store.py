"""Durable storage of the schema registry: one SQLite file.

Why SQLite rather than an append-only JSON-lines log: the registry needs indexed lookups
(schema by canonical text, versions by subject) and atomic multi-row writes (a soft delete
touches every version of a subject). SQLite gives both from the stdlib, and its WAL mode
lets readers proceed during a write. Every write method is one transaction, committed with
``synchronous=FULL`` before it returns: once a client holds a schema id, a crash or restart
cannot take it back, and a failed write leaves nothing behind.

Tables:

* ``schemas``: one row per distinct schema (identity = type + canonical text + references).
  Ids come from AUTOINCREMENT and rows are never deleted, so an id is never reused for a
  different schema, even after a hard delete (old messages on Kafka still carry it).
* ``subject_versions``: (subject, version) -> schema id, with a soft-delete flag.
* ``config``: compatibility level per subject; the empty subject holds the global level.

The store applies Confluent's rules for versions and deletes and raises
:class:`~mesh.errors.RegistryError` with Confluent's error codes. It is synchronous and
not thread-safe: one registry process owns a database file, and the server calls it from
its event loop only. Compatibility checks are the caller's job (see ``server``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh.errors import RegistryError

__all__ = [
    "DEFAULT_COMPATIBILITY",
    "SchemaStore",
    "StoredSchema",
    "SubjectVersion",
    "subject_not_found",
    "version_not_found",
]

DEFAULT_COMPATIBILITY = "BACKWARD"
_GLOBAL = ""
_SCHEMA_VERSION = 1
_DDL = """
CREATE TABLE IF NOT EXISTS schemas (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    schema_type TEXT NOT NULL,
    canonical TEXT NOT NULL,
    refs TEXT NOT NULL,
    schema TEXT NOT NULL,
    UNIQUE (schema_type, canonical, refs)
);
CREATE TABLE IF NOT EXISTS subject_versions (
    subject TEXT NOT NULL,
    version INTEGER NOT NULL,
    schema_id INTEGER NOT NULL REFERENCES schemas (id),
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (subject, version)
);
CREATE INDEX IF NOT EXISTS subject_versions_by_schema ON subject_versions (schema_id);
CREATE TABLE IF NOT EXISTS config (
    subject TEXT PRIMARY KEY,
    compatibility TEXT NOT NULL
);
"""


def subject_not_found(subject: str) -> RegistryError:
    """Confluent 40401."""
    return RegistryError(f"Subject '{subject}' not found.", status=404, error_code=40401)


def version_not_found(version: int) -> RegistryError:
    """Confluent 40402."""
    return RegistryError(f"Version {version} not found.", status=404, error_code=40402)


def _schema_not_found(schema_id: int | None = None) -> RegistryError:
    message = "Schema not found" if schema_id is None else f"Schema {schema_id} not found"
    return RegistryError(message, status=404, error_code=40403)


@dataclass(frozen=True)
class StoredSchema:
    """A schema as registered: id, text as first submitted, type and references."""

    id: int
    schema: str
    schema_type: str = "AVRO"
    references: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class SubjectVersion:
    """One version of a subject and the schema it points to."""

    subject: str
    version: int
    schema: StoredSchema
    deleted: bool = False


class SchemaStore:
    """The registry's SQLite database at ``path`` (created with its parents if missing)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in _write).
        self._db = sqlite3.connect(path, isolation_level=None, timeout=5.0)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._write():
                # executescript() would COMMIT on its own; one by one they stay in ours.
                for statement in _DDL.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        """Close the database; the store is unusable afterwards."""
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction; rolled back on any error, sqlite errors become 5000x."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise RegistryError(
                    f"Operation timed out: {exc}", status=500, error_code=50002
                ) from exc
            raise _store_error(exc) from exc
        except sqlite3.Error as exc:
            raise _store_error(exc) from exc

    def _read(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise _store_error(exc) from exc

    # -- reads ---------------------------------------------------------------------------

    def subjects(self, *, deleted: bool = False, deleted_only: bool = False) -> list[str]:
        """Subjects with at least one live version (or soft-deleted one, if asked), sorted."""
        rows = self._read(
            "SELECT subject, MIN(deleted), MAX(deleted) FROM subject_versions GROUP BY subject"
            " ORDER BY subject"
        )
        if deleted_only:
            return [s for s, _, has_deleted in rows if has_deleted]
        return [s for s, has_live, _ in rows if deleted or has_live == 0]

    def versions(
        self, subject: str, *, deleted: bool = False, deleted_only: bool = False
    ) -> list[int]:
        """Version numbers of ``subject``, ascending; 40401 if it has none to show."""
        rows = self._read(
            "SELECT version, deleted FROM subject_versions WHERE subject = ? ORDER BY version",
            subject,
        )
        if deleted_only:
            found = [v for v, d in rows if d]
        else:
            found = [v for v, d in rows if deleted or not d]
        if not found:
            raise subject_not_found(subject)
        return found

    def get_version(
        self, subject: str, version: int | None, *, deleted: bool = False
    ) -> SubjectVersion:
        """A version of ``subject``; ``None`` means the latest. 40401 or 40402 if missing."""
        rows = self._subject_rows(subject, deleted=deleted)
        if not rows:
            raise subject_not_found(subject)
        if version is None:
            return rows[-1]
        for row in rows:
            if row.version == version:
                return row
        raise version_not_found(version)

    def live_versions(self, subject: str) -> list[SubjectVersion]:
        """Non-deleted versions of ``subject``, oldest first (empty if none)."""
        return self._subject_rows(subject, deleted=False)

    def schema(self, schema_id: int) -> StoredSchema:
        """The schema with ``schema_id`` if some subject version (even soft-deleted) uses it."""
        rows = self._read(
            "SELECT s.id, s.schema, s.schema_type, s.refs FROM schemas s WHERE s.id = ?"
            " AND EXISTS (SELECT 1 FROM subject_versions v WHERE v.schema_id = s.id)",
            schema_id,
        )
        if not rows:
            raise _schema_not_found(schema_id)
        return _stored(rows[0])

    def schema_usage(self, schema_id: int, *, deleted: bool = False) -> list[tuple[str, int]]:
        """(subject, version) pairs that use ``schema_id``; 40403 if none."""
        self.schema(schema_id)
        rows = self._read(
            "SELECT subject, version, deleted FROM subject_versions WHERE schema_id = ?"
            " ORDER BY subject, version",
            schema_id,
        )
        return [(s, v) for s, v, d in rows if deleted or not d]

    def find(
        self, subject: str, schema_type: str, canonical: str, references: list[dict[str, Any]]
    ) -> SubjectVersion | None:
        """The latest live version of ``subject`` holding this schema, if any."""
        schema_id = self._schema_id(schema_type, canonical, references)
        for row in reversed(self._subject_rows(subject, deleted=False)):
            if row.schema.id == schema_id:
                return row
        return None

    def lookup(
        self,
        subject: str,
        schema_type: str,
        canonical: str,
        references: list[dict[str, Any]],
        *,
        deleted: bool = False,
    ) -> SubjectVersion:
        """The latest version of ``subject`` holding this schema; 40401 / 40403 if none."""
        rows = self._subject_rows(subject, deleted=deleted)
        if not rows:
            raise subject_not_found(subject)
        schema_id = self._schema_id(schema_type, canonical, references)
        for row in reversed(rows):
            if row.schema.id == schema_id:
                return row
        raise _schema_not_found()

    def compatibility(self, subject: str | None) -> str | None:
        """The level set for ``subject`` (``None``: the global one); ``None`` if unset."""
        rows = self._read("SELECT compatibility FROM config WHERE subject = ?", subject or _GLOBAL)
        return str(rows[0][0]) if rows else None

    def effective_compatibility(self, subject: str) -> str:
        """The level that applies to ``subject``: its own, else global, else BACKWARD."""
        return self.compatibility(subject) or self.compatibility(None) or DEFAULT_COMPATIBILITY

    # -- writes --------------------------------------------------------------------------

    def register(
        self,
        subject: str,
        schema_type: str,
        canonical: str,
        text: str,
        references: list[dict[str, Any]],
    ) -> SubjectVersion:
        """Add the schema as the next version of ``subject``; reuse its id if known anywhere.

        Idempotent: if a live version of ``subject`` already holds it, that one is returned.
        """
        with self._write():
            existing = self.find(subject, schema_type, canonical, references)
            if existing is not None:
                return existing
            schema_id = self._schema_id(schema_type, canonical, references)
            if schema_id is None:
                cursor = self._db.execute(
                    "INSERT INTO schemas (schema_type, canonical, refs, schema)"
                    " VALUES (?, ?, ?, ?)",
                    (schema_type, canonical, _refs_key(references), text),
                )
                schema_id = int(cursor.lastrowid or 0)
            (latest,) = self._db.execute(
                "SELECT COALESCE(MAX(version), 0) FROM subject_versions WHERE subject = ?",
                (subject,),
            ).fetchone()
            self._db.execute(
                "INSERT INTO subject_versions (subject, version, schema_id) VALUES (?, ?, ?)",
                (subject, latest + 1, schema_id),
            )
        return self.get_version(subject, latest + 1)

    def delete_subject(self, subject: str, *, permanent: bool = False) -> list[int]:
        """Soft-delete every live version (and the subject's config), or hard-delete a
        subject already soft-deleted. Returns the versions deleted."""
        with self._write():
            rows = self._subject_rows(subject, deleted=True)
            if not rows:
                raise subject_not_found(subject)
            live = [r.version for r in rows if not r.deleted]
            if permanent:
                if live:
                    raise RegistryError(
                        f"Subject '{subject}' was not deleted first before being permanently"
                        " deleted",
                        status=404,
                        error_code=40405,
                    )
                self._db.execute("DELETE FROM subject_versions WHERE subject = ?", (subject,))
                return [r.version for r in rows]
            if not live:
                raise RegistryError(
                    f"Subject '{subject}' was soft deleted.Set permanent=true to delete"
                    " permanently",
                    status=404,
                    error_code=40404,
                )
            self._db.execute(
                "UPDATE subject_versions SET deleted = 1 WHERE subject = ?", (subject,)
            )
            self._db.execute("DELETE FROM config WHERE subject = ?", (subject,))
            return live

    def delete_version(self, subject: str, version: int | None, *, permanent: bool = False) -> int:
        """Soft-delete one live version (``None``: the latest), or hard-delete a soft-deleted
        one (``None``: the latest, deleted or not). Returns the version number."""
        with self._write():
            rows = self._subject_rows(subject, deleted=True)
            if version is None:
                rows = rows if permanent else [r for r in rows if not r.deleted]
                if not rows:
                    raise subject_not_found(subject)
                row = rows[-1]
            else:
                if not rows:
                    raise subject_not_found(subject)
                matching = [r for r in rows if r.version == version]
                if not matching:
                    raise version_not_found(version)
                row = matching[0]
            if permanent and not row.deleted:
                raise RegistryError(
                    f"Subject '{subject}' Version {row.version} was not deleted first before"
                    " being permanently deleted",
                    status=404,
                    error_code=40407,
                )
            if not permanent and row.deleted:
                raise RegistryError(
                    f"Subject '{subject}' Version {row.version} was soft deleted.Set"
                    " permanent=true to delete permanently",
                    status=404,
                    error_code=40406,
                )
            sql = (
                "DELETE FROM subject_versions WHERE subject = ? AND version = ?"
                if permanent
                else "UPDATE subject_versions SET deleted = 1 WHERE subject = ? AND version = ?"
            )
            self._db.execute(sql, (subject, row.version))
            return row.version

    def set_compatibility(self, subject: str | None, level: str) -> None:
        """Set the level of ``subject`` (``None``: the global level)."""
        with self._write():
            self._db.execute(
                "INSERT INTO config (subject, compatibility) VALUES (?, ?)"
                " ON CONFLICT (subject) DO UPDATE SET compatibility = excluded.compatibility",
                (subject or _GLOBAL, level),
            )

    def delete_compatibility(self, subject: str | None) -> str | None:
        """Remove the level of ``subject`` (``None``: the global one); returns the old level."""
        with self._write():
            old = self.compatibility(subject)
            self._db.execute("DELETE FROM config WHERE subject = ?", (subject or _GLOBAL,))
            return old

    # -- helpers -------------------------------------------------------------------------

    def _subject_rows(self, subject: str, *, deleted: bool) -> list[SubjectVersion]:
        rows = self._read(
            "SELECT v.version, v.deleted, s.id, s.schema, s.schema_type, s.refs"
            " FROM subject_versions v JOIN schemas s ON s.id = v.schema_id"
            " WHERE v.subject = ? ORDER BY v.version",
            subject,
        )
        return [
            SubjectVersion(subject, version, _stored(rest), bool(gone))
            for version, gone, *rest in rows
            if deleted or not gone
        ]

    def _schema_id(
        self, schema_type: str, canonical: str, references: list[dict[str, Any]]
    ) -> int | None:
        rows = self._read(
            "SELECT id FROM schemas WHERE schema_type = ? AND canonical = ? AND refs = ?",
            schema_type,
            canonical,
            _refs_key(references),
        )
        return int(rows[0][0]) if rows else None


def _refs_key(references: list[dict[str, Any]]) -> str:
    return json.dumps(references, sort_keys=True, separators=(",", ":"))


def _stored(row: tuple[Any, ...] | list[Any]) -> StoredSchema:
    schema_id, text, schema_type, refs = row
    return StoredSchema(int(schema_id), str(text), str(schema_type), json.loads(refs))


def _store_error(exc: sqlite3.Error) -> RegistryError:
    return RegistryError(f"Error in the backend data store: {exc}", status=500, error_code=50001)
