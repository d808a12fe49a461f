"""Schema registry access for the codec: register on first use, fetch writers by id.

Faust codecs are synchronous, so this uses the blocking client; each call happens once
per schema per process thanks to the caches, not once per event.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import httpx
from fastavro import parse_schema
from schema_registry.client import SchemaRegistryClient
from schema_registry.client.errors import ClientError
from schema_registry.client.schema import AvroSchema

from mesh.errors import RegistryError, UnknownSchemaError
from mesh.settings import Settings

ParsedSchema = Any  # fastavro's parsed schema is a plain dict/list/str


class RegistryClient:
    """Caching access to one schema registry (Confluent API)."""

    def __init__(
        self, url: str, *, timeout: float = 10.0, auth: tuple[str, str] | None = None
    ) -> None:
        """``auth``: user and password for the registry's basic auth."""
        self.url = url
        self._client = SchemaRegistryClient(
            url=url,
            timeout=httpx.Timeout(timeout),
            auth=httpx.BasicAuth(*auth) if auth else None,
        )
        # The client opens an httpx.Client per request, and each built its TLS context
        # anew: ~40 ms of CPU loading the CA bundle, for every registry call (a worker's
        # start registers and fetches a dozen schemas). Build httpx's default one once.
        self._client.client_kwargs.setdefault("verify", httpx.create_ssl_context())
        self._ids: dict[tuple[str, str], int] = {}
        self._by_id: dict[int, ParsedSchema] = {}
        self._versions: dict[int, list[tuple[str, int]]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> RegistryClient:
        """The registry ``settings`` name, with their basic auth if any."""
        return cls(settings.schema_registry_url, auth=settings.registry_auth)

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        """Register ``schema`` under ``subject`` (idempotent) and return its global id."""
        key = (subject, json.dumps(schema, sort_keys=True))
        with self._lock:
            cached = self._ids.get(key)
            if cached is not None:
                return cached
            schema_id = int(
                self._call(
                    f"registering a schema under '{subject}'",
                    lambda: self._client.register(subject, AvroSchema(schema)),
                    detail=True,
                )
            )
            self._ids[key] = schema_id
            self._by_id.setdefault(schema_id, parse_schema(schema))
            return schema_id

    def _call(self, what: str, request: Callable[[], Any], *, detail: bool = False) -> Any:
        """Run one client request, mapping its failures onto :class:`RegistryError`."""
        try:
            return request()
        except ClientError as exc:
            status = exc.http_code or 0
            extra = f": {exc.server_traceback or exc.message}" if detail else ""
            raise RegistryError(
                f"{what} at {self.url} failed (HTTP {status}){extra}",
                status=status,
                error_code=_error_code(exc),
            ) from None
        except httpx.HTTPError as exc:
            raise _unreachable(self.url, exc) from None

    def writer_schema(self, schema_id: int) -> ParsedSchema:
        """The parsed schema with global id ``schema_id`` (a message's writer schema)."""
        with self._lock:
            cached = self._by_id.get(schema_id)
            if cached is not None:
                return cached
            found = self._call(
                f"fetching schema {schema_id}", lambda: self._client.get_by_id(schema_id)
            )
            if found is None:
                raise UnknownSchemaError(
                    f"schema id {schema_id} is not known to the registry at {self.url}; the "
                    "message was written against another registry or its schema was deleted"
                )
            parsed = parse_schema(found.raw_schema)
            self._by_id[schema_id] = parsed
            return parsed

    def subject_version(
        self, schema_id: int, *, subject: str | None = None
    ) -> tuple[str, int] | None:
        """The ``(subject, version)`` under which schema ``schema_id`` is registered.

        One id can be registered under several subjects: ``subject`` picks that one when
        the id is registered under it, otherwise the first pair the registry lists is
        returned. ``None`` when the registry lists none (unknown id). Found pairs are
        cached: a subject's version never changes its id, so at worst the cache misses a
        subject that registered the same schema later.
        """
        with self._lock:
            pairs = self._versions.get(schema_id)
            if pairs is None:
                found = self._call(
                    f"fetching the versions of schema {schema_id}",
                    lambda: self._client.get_schema_subject_versions(schema_id),
                )
                pairs = [(str(p.subject), int(p.version)) for p in found or []]
                if not pairs:
                    return None  # not cached: the id may be registered later
                self._versions[schema_id] = pairs
        return next((p for p in pairs if p[0] == subject), pairs[0])


def _error_code(exc: ClientError) -> int:
    body = exc.server_traceback
    if isinstance(body, dict) and isinstance(body.get("error_code"), int):
        return int(body["error_code"])
    return exc.http_code or 0


def _unreachable(url: str, exc: Exception) -> RegistryError:
    return RegistryError(
        f"the schema registry at {url} is unreachable ({type(exc).__name__}: {exc}); "
        "check MESH_SCHEMA_REGISTRY_URL and that the registry runs",
        status=0,
        error_code=0,
        retriable=True,
    )
