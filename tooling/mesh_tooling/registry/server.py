"""HTTP front of the schema registry: the Confluent Schema Registry REST API on aiohttp.

Routes (each also with a trailing slash), Avro only:

    GET    /                                   {}
    GET    /schemas/types                      ["AVRO"]
    GET    /subjects                           ?deleted= &deleted_only= &subjectPrefix=
    GET    /subjects/{s}/versions              ?deleted= &deleted_only=
    POST   /subjects/{s}/versions              register -> {"id": n}
    GET    /subjects/{s}/versions/{v}          v = 1..2^31-1, latest or -1; ?deleted=
    GET    /subjects/{s}/versions/{v}/schema   the schema text only
    DELETE /subjects/{s}/versions/{v}          ?permanent=
    POST   /subjects/{s}                       is this schema registered under s?
    DELETE /subjects/{s}                       ?permanent=
    GET    /schemas/ids/{id}                   also /schema, /versions, /subjects
    POST   /compatibility/subjects/{s}/versions[/{v}]   ?verbose=
    GET|PUT|DELETE /config[/{s}]               GET /config/{s}?defaultToGlobal=

Errors carry Confluent's body ``{"error_code": N, "message": "..."}``. A body that is not
JSON, or not a JSON object, gets 400 with error code 400, as Confluent (Jackson behind its
``JsonParseExceptionMapper``) answers; a request body of another media type gets 415.
Nothing is stored when a request fails.

Writes (register, delete, config) are serialized by one ``asyncio.Lock``: a registration
reads the subject's versions, checks compatibility and then inserts, and that sequence
must not interleave with another write, or two concurrent POSTs could both pass a check
the second one should fail, or race for the same version number. The store is called
synchronously today, so no await splits the sequence yet; the lock keeps it whole if one
ever does (moving SQLite work to a thread, say). Each store write is also one SQLite
transaction, which is what guarantees that a failed request stores nothing.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Middleware

from mesh.errors import PortInUseError, RegistryError, SchemaIncompatibleError, StackError
from mesh_tooling.registry.compatibility import CompatibilityLevel, check_compatibility
from mesh_tooling.registry.schema import ParsedSchema, invalid_schema, parse_schema
from mesh_tooling.registry.store import (
    DEFAULT_COMPATIBILITY,
    SchemaStore,
    StoredSchema,
    SubjectVersion,
    version_not_found,
)

__all__ = ["CONTENT_TYPE", "create_registry_app", "serve_registry"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
_ACCEPTED_BODIES = frozenset(
    {
        CONTENT_TYPE,
        "application/vnd.schemaregistry+json",
        "application/json",
        "application/octet-stream",  # what aiohttp reports when there is no Content-Type
    }
)
_MAX_REFERENCE_DEPTH = 32
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_registry_app(
    db_path: Path, *, basic_auth: tuple[str, str] | None = None
) -> web.Application:
    """The registry as an aiohttp application storing its data in SQLite file ``db_path``.

    The database is opened when the app starts and closed on its cleanup. ``basic_auth``
    (user, password): every request must carry them, as Confluent's and Karapace's
    registries can require.
    """
    registry = _Registry(db_path)
    middlewares: list[Middleware] = [_errors_and_logging]
    if basic_auth is not None:
        middlewares.append(_basic_auth(*basic_auth))
    app = web.Application(middlewares=middlewares)
    app.cleanup_ctx.append(registry.lifecycle)
    routes: list[tuple[str, str, _Handler]] = [
        ("GET", "/schemas/types", registry.schema_types),
        ("GET", "/subjects", registry.list_subjects),
        ("GET", "/subjects/{subject}/versions", registry.list_versions),
        ("POST", "/subjects/{subject}/versions", registry.register),
        ("GET", "/subjects/{subject}/versions/{version}", registry.get_version),
        ("GET", "/subjects/{subject}/versions/{version}/schema", registry.get_version_schema),
        ("DELETE", "/subjects/{subject}/versions/{version}", registry.delete_version),
        ("POST", "/subjects/{subject}", registry.lookup),
        ("DELETE", "/subjects/{subject}", registry.delete_subject),
        ("GET", "/schemas/ids/{id:-?[0-9]+}", registry.get_schema),
        ("GET", "/schemas/ids/{id:-?[0-9]+}/schema", registry.get_schema_text),
        ("GET", "/schemas/ids/{id:-?[0-9]+}/versions", registry.get_schema_versions),
        ("GET", "/schemas/ids/{id:-?[0-9]+}/subjects", registry.get_schema_subjects),
        ("POST", "/compatibility/subjects/{subject}/versions", registry.test_compatibility),
        (
            "POST",
            "/compatibility/subjects/{subject}/versions/{version}",
            registry.test_compatibility,
        ),
        ("GET", "/config", registry.get_config),
        ("PUT", "/config", registry.put_config),
        ("DELETE", "/config", registry.delete_config),
        ("GET", "/config/{subject}", registry.get_config),
        ("PUT", "/config/{subject}", registry.put_config),
        ("DELETE", "/config/{subject}", registry.delete_config),
    ]
    app.router.add_get("/", registry.root)
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
        app.router.add_route(method, f"{path}/", handler)
    return app


async def serve_registry(host: str, port: int, db_path: Path) -> None:
    """Serve the registry on ``host:port`` until cancelled, then close it cleanly.

    Raises :class:`~mesh.errors.PortInUseError` if the port is taken and
    :class:`~mesh.errors.StackError` if the database cannot be opened.
    """
    runner = web.AppRunner(create_registry_app(db_path), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError("schema registry", host, port) from exc
            raise StackError(f"schema registry cannot listen on {host}:{port}: {exc}") from exc
        log.info("schema registry listening on http://%s:%d, data in %s", host, port, db_path)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _basic_auth(user: str, password: str) -> Middleware:
    expected = aiohttp.BasicAuth(user, password).encode()

    @web.middleware
    async def check(request: web.Request, handler: _Handler) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            response = _error(401, 401, "Unauthorized")
            response.headers["WWW-Authenticate"] = 'Basic realm="schema-registry"'
            return response
        return await handler(request)

    return check


@web.middleware
async def _errors_and_logging(request: web.Request, handler: _Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        response = await handler(request)
    except RegistryError as exc:
        response = _error(exc.status, exc.error_code, exc.message)
    except web.HTTPException as exc:  # no such route / method: Jersey's wording
        response = _error(exc.status, exc.status, f"HTTP {exc.status} {exc.reason}")
    except Exception:
        log.exception("registry request %s %s failed", request.method, request.path_qs)
        response = _error(500, 500, "Internal Server Error")
    elapsed_ms = (time.perf_counter() - started) * 1000
    log.debug("%s %s -> %d (%.1f ms)", request.method, request.path_qs, response.status, elapsed_ms)
    return response


def _json(data: object, status: int = 200) -> web.Response:
    body = json.dumps(data, ensure_ascii=False).encode()
    return web.Response(body=body, status=status, headers={"Content-Type": CONTENT_TYPE})


def _error(status: int, error_code: int, message: str) -> web.Response:
    return _json({"error_code": error_code, "message": message}, status)


def _bad_request(message: str) -> RegistryError:
    return RegistryError(message, status=400, error_code=400)


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "false").strip().lower() == "true"


def _int_param(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise _bad_request(f"Query parameter '{name}' must be an integer, got {raw!r}") from None


def _page(request: web.Request, items: list[Any]) -> list[Any]:
    """Confluent's ``offset`` / ``limit`` paging (limit -1: everything)."""
    offset = max(_int_param(request, "offset", 0), 0)
    limit = _int_param(request, "limit", -1)
    return items[offset:] if limit < 0 else items[offset : offset + limit]


def _version(raw: str) -> int | None:
    """A version path segment: a number in [1, 2^31-1], or ``latest`` / -1 (None)."""
    text = raw.strip().lower()
    if text in ("latest", "-1"):
        return None
    if text.isascii() and text.isdigit() and 1 <= int(text) <= 2**31 - 1:
        return int(text)
    raise RegistryError(
        f"The specified version '{raw}' is not a valid version id. Allowed values are between"
        ' [1, 2^31-1] and the string "latest"',
        status=422,
        error_code=42202,
    )


def _level(body: dict[str, Any]) -> CompatibilityLevel:
    """The level of a PUT /config body (Confluent reads it case-insensitively)."""
    raw = body.get("compatibility", body.get("compatibilityLevel"))
    if isinstance(raw, str) and raw.upper() in CompatibilityLevel.__members__:
        return CompatibilityLevel(raw.upper())
    raise RegistryError(
        "Invalid compatibility level. Valid values are none, backward, forward, full,"
        " backward_transitive, forward_transitive, and full_transitive",
        status=422,
        error_code=42203,
    )


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type not in _ACCEPTED_BODIES:
        raise RegistryError("HTTP 415 Unsupported Media Type", status=415, error_code=415)
    raw = await request.read()
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _bad_request(f"Malformed JSON in request body: {exc}") from exc
    if not isinstance(body, dict):
        raise _bad_request("The request body must be a JSON object")
    return body


def _schema_fields(body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """``schema`` text and ``references`` of a register / lookup / compatibility body."""
    text = body.get("schema")
    if text is None or text == "":
        raise invalid_schema("Empty schema")
    if not isinstance(text, str):
        raise _bad_request("Field 'schema' must be a string holding the schema's JSON")
    schema_type = body.get("schemaType") or "AVRO"
    if schema_type != "AVRO":
        raise RegistryError(
            f"Invalid schema type {schema_type!r}: this registry supports AVRO only",
            status=422,
            error_code=42201,
        )
    refs = body.get("references")
    if refs is None:
        refs = []
    if not isinstance(refs, list) or not all(_is_reference(r) for r in refs):
        raise _bad_request("Field 'references' must be a list of {name, subject, version}")
    return text, [
        {"name": r["name"], "subject": r["subject"], "version": r["version"]} for r in refs
    ]


def _is_reference(ref: object) -> bool:
    return (
        isinstance(ref, dict)
        and isinstance(ref.get("name"), str)
        and isinstance(ref.get("subject"), str)
        and isinstance(ref.get("version"), int)
    )


def _version_body(row: SubjectVersion) -> dict[str, Any]:
    body: dict[str, Any] = {
        "subject": row.subject,
        "version": row.version,
        "id": row.schema.id,
        "schema": row.schema.schema,
    }
    if row.schema.references:
        body["references"] = row.schema.references
    return body


class _Registry:
    """Request handlers over one :class:`SchemaStore`."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self._store: SchemaStore | None = None
        self.write_lock = asyncio.Lock()
        # Schemas are immutable once they have an id, so parsed forms can be kept forever.
        self._parsed: dict[int, ParsedSchema] = {}

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        try:
            self._store = SchemaStore(self.db_path)
        except Exception as exc:
            raise StackError(
                f"schema registry cannot open its database {self.db_path}: {exc}"
            ) from exc
        try:
            yield
        finally:
            self._store.close()
            self._store = None

    @property
    def store(self) -> SchemaStore:
        if self._store is None:
            raise RegistryError("Registry is not running", status=500, error_code=50001)
        return self._store

    # -- schema parsing ------------------------------------------------------------------

    def _parse(
        self, text: str, refs: list[dict[str, Any]], depth: int = 0
    ) -> tuple[ParsedSchema, list[dict[str, Any]]]:
        """Parse ``text`` with its references resolved; references come back with the
        concrete version numbers they resolved to."""
        if depth > _MAX_REFERENCE_DEPTH:
            raise invalid_schema("references nest too deeply")
        resolved: dict[str, ParsedSchema] = {}
        pinned: list[dict[str, Any]] = []
        for ref in refs:
            wanted = None if ref["version"] == -1 else ref["version"]
            try:
                row = self.store.get_version(ref["subject"], wanted, deleted=True)
            except RegistryError:
                raise invalid_schema(
                    f"reference {ref['name']!r} to subject {ref['subject']!r}"
                    f" version {ref['version']} not found"
                ) from None
            resolved[ref["name"]] = self._parsed_stored(row.schema, depth + 1)
            pinned.append({**ref, "version": row.version})
        return parse_schema(text, resolved), pinned

    def _parsed_stored(self, stored: StoredSchema, depth: int = 0) -> ParsedSchema:
        if stored.id not in self._parsed:
            self._parsed[stored.id] = self._parse(stored.schema, stored.references, depth)[0]
        return self._parsed[stored.id]

    # -- routes --------------------------------------------------------------------------

    async def root(self, request: web.Request) -> web.Response:
        return _json({})

    async def schema_types(self, request: web.Request) -> web.Response:
        return _json(["AVRO"])

    async def list_subjects(self, request: web.Request) -> web.Response:
        subjects = self.store.subjects(
            deleted=_flag(request, "deleted"), deleted_only=_flag(request, "deleted_only")
        )
        prefix = request.query.get("subjectPrefix", "")
        return _json(_page(request, [s for s in subjects if s.startswith(prefix)]))

    async def list_versions(self, request: web.Request) -> web.Response:
        versions = self.store.versions(
            request.match_info["subject"],
            deleted=_flag(request, "deleted"),
            deleted_only=_flag(request, "deleted_only"),
        )
        return _json(_page(request, versions))

    async def get_version(self, request: web.Request) -> web.Response:
        return _json(_version_body(self._version_row(request)))

    async def get_version_schema(self, request: web.Request) -> web.Response:
        return _raw_schema(self._version_row(request).schema)

    def _version_row(self, request: web.Request) -> SubjectVersion:
        version = _version(request.match_info["version"])
        return self.store.get_version(
            request.match_info["subject"], version, deleted=_flag(request, "deleted")
        )

    async def register(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        text, refs = _schema_fields(await _body(request))
        async with self.write_lock:
            parsed, refs = self._parse(text, refs)
            # Re-registering a live version answers its id without a compatibility check.
            existing = self.store.find(subject, "AVRO", parsed.canonical, refs)
            if existing is not None:
                return _json({"id": existing.schema.id})
            level = CompatibilityLevel(self.store.effective_compatibility(subject))
            previous = [
                (row.version, self._parsed_stored(row.schema))
                for row in self.store.live_versions(subject)
            ]
            reasons = check_compatibility(parsed, previous, level)
            if reasons:
                raise SchemaIncompatibleError(
                    "Schema being registered is incompatible with an earlier schema for subject"
                    f' "{subject}", details: [{", ".join(reasons)}]',
                    status=409,
                    error_code=409,
                )
            row = self.store.register(subject, "AVRO", parsed.canonical, text, refs)
        log.info("registered %s version %d as schema id %d", subject, row.version, row.schema.id)
        return _json({"id": row.schema.id})

    async def lookup(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        text, refs = _schema_fields(await _body(request))
        parsed, refs = self._parse(text, refs)
        row = self.store.lookup(
            subject, "AVRO", parsed.canonical, refs, deleted=_flag(request, "deleted")
        )
        return _json(_version_body(row))

    async def delete_subject(self, request: web.Request) -> web.Response:
        async with self.write_lock:
            deleted = self.store.delete_subject(
                request.match_info["subject"], permanent=_flag(request, "permanent")
            )
        return _json(deleted)

    async def delete_version(self, request: web.Request) -> web.Response:
        version = _version(request.match_info["version"])
        async with self.write_lock:
            deleted = self.store.delete_version(
                request.match_info["subject"], version, permanent=_flag(request, "permanent")
            )
        return _json(deleted)

    async def get_schema(self, request: web.Request) -> web.Response:
        stored = self.store.schema(int(request.match_info["id"]))
        body: dict[str, Any] = {"schema": stored.schema}
        if stored.references:
            body["references"] = stored.references
        return _json(body)

    async def get_schema_text(self, request: web.Request) -> web.Response:
        return _raw_schema(self.store.schema(int(request.match_info["id"])))

    async def get_schema_versions(self, request: web.Request) -> web.Response:
        usage = self._usage(request)
        return _json(_page(request, [{"subject": s, "version": v} for s, v in usage]))

    async def get_schema_subjects(self, request: web.Request) -> web.Response:
        usage = self._usage(request)
        return _json(_page(request, sorted({s for s, _ in usage})))

    def _usage(self, request: web.Request) -> list[tuple[str, int]]:
        usage = self.store.schema_usage(
            int(request.match_info["id"]), deleted=_flag(request, "deleted")
        )
        subject = request.query.get("subject")
        return [(s, v) for s, v in usage if subject is None or s == subject]

    async def test_compatibility(self, request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        verbose = _flag(request, "verbose")
        text, refs = _schema_fields(await _body(request))
        if "version" in request.match_info:  # against one version
            version = _version(request.match_info["version"])
            try:
                targets = [self.store.get_version(subject, version)]
            except RegistryError as exc:
                if version is None and exc.error_code == 40401:
                    targets = []  # nothing registered yet: anything is compatible
                elif exc.error_code == 40401 and version is not None:
                    raise version_not_found(version) from None
                else:
                    raise
        else:  # against what registering would check
            targets = self.store.live_versions(subject)
        try:
            parsed, _ = self._parse(text, refs)
        except RegistryError as exc:
            if not verbose or exc.error_code != 42201:
                raise
            return _json({"is_compatible": False, "messages": [exc.message]})
        level = CompatibilityLevel(self.store.effective_compatibility(subject))
        previous = [(row.version, self._parsed_stored(row.schema)) for row in targets]
        reasons = check_compatibility(parsed, previous, level)
        result: dict[str, Any] = {"is_compatible": not reasons}
        if verbose:
            result["messages"] = reasons
        return _json(result)

    async def get_config(self, request: web.Request) -> web.Response:
        subject = request.match_info.get("subject")
        if subject is None:
            return _json({"compatibilityLevel": self._global_level()})
        level = self.store.compatibility(subject)
        if level is None and _flag(request, "defaultToGlobal"):
            level = self.store.effective_compatibility(subject)
        if level is None:
            raise _no_subject_level(subject)
        return _json({"compatibilityLevel": level})

    def _global_level(self) -> str:
        return self.store.compatibility(None) or DEFAULT_COMPATIBILITY

    async def put_config(self, request: web.Request) -> web.Response:
        level = _level(await _body(request))
        async with self.write_lock:
            self.store.set_compatibility(request.match_info.get("subject"), level.value)
        return _json({"compatibility": level.value})

    async def delete_config(self, request: web.Request) -> web.Response:
        subject = request.match_info.get("subject")
        async with self.write_lock:
            old = self.store.delete_compatibility(subject)
        if subject is None:
            return _json({"compatibilityLevel": old or self._global_level()})
        if old is None:
            raise _no_subject_level(subject)
        return _json({"compatibilityLevel": old})


def _raw_schema(stored: StoredSchema) -> web.Response:
    return web.Response(body=stored.schema.encode(), headers={"Content-Type": CONTENT_TYPE})


def _no_subject_level(subject: str) -> RegistryError:
    return RegistryError(
        f"Subject '{subject}' does not have subject-level compatibility configured",
        status=404,
        error_code=40408,
    )
