"""The DictaMesh exception tree.

Every error the project raises on purpose derives from :class:`MeshError`; the CLI
turns one into a single clear message and a non-zero exit instead of a traceback.

    MeshError
    ├── ConfigError            bad settings or domain config (names file, key, problem)
    ├── StackError             the local dev stack could not start a service
    │   └── PortInUseError     a port the stack needs is already taken
    ├── RegistryError          a schema registry call failed (carries HTTP status + error code)
    │   └── SchemaIncompatibleError
    ├── CodecError             an event could not be encoded or decoded
    │   └── UnknownSchemaError the wire format names a schema id the registry does not know
    ├── SourceError            a source system (e.g. Directus) failed or refused a request
    │   ├── SourceAuthError    credentials were rejected (not retriable without new ones)
    │   └── SourceDataError    an item does not fit its entity's schema (dead-lettered)
    ├── UnavailableError       the fleet cannot read a key right now (rebalancing,
    │                          recovering, owner not answering): retry after ``retry_after``
    ├── ApiError               an HTTP error answer of the REST API (status, code, message)
    ├── MirrorDatabaseError, MirrorRowError      (mesh.mirror)
    ├── GenerationError                          (mesh.runtime.generation: the fleet
    │                                             generation could not be read from Kafka)
    ├── AuthError, PeerAuthError                 (mesh.auth: a bearer token missing or
    │                                             invalid, 401; a peer call not signed
    │                                             by the fleet, 403)
    ├── UnknownKeyError                          (mesh.auth.keys: no key for a token)
    ├── BodyTooLargeError, PublicGraphQLError    (mesh.graphql.limits; the latter is also
    │                                             graphql-core's GraphQLError)
    ├── BadRequestError, NotAllowedError         (mesh.web.graphql: HTTP 400 and 405)
    ├── FleetScanError                           (mesh.relations_check)
    ├── SagaError                                a saga cannot start or a step failed
    │   ├── SagaInputError                       the request is malformed (no saga started)
    │   └── StepRefusedError                     a step's business rule refused (the saga
    │                                             compensates at once, no retry)
    └── DeadLetterToolError                      (mesh.deadletters: a dead-letter command
                                                  cannot run; exit code 2)

``retriable`` tells retry logic whether trying again may succeed.
"""

from __future__ import annotations

from typing import Any


class MeshError(Exception):
    """Root of every error DictaMesh raises on purpose."""

    retriable: bool = False
    retry_after: float | None = None
    """Seconds the failed system asked to wait before the next try, if it said."""

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retriable is not None:
            self.retriable = retriable

    def __str__(self) -> str:
        return self.message


class ConfigError(MeshError):
    """Settings or the domain config file are invalid; the process cannot start."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None) -> None:
        where = ", ".join(p for p in (source, f"key '{key}'" if key else None) if p)
        super().__init__(f"{where}: {message}" if where else message)
        self.source = source
        self.key = key


class StackError(MeshError):
    """A service of the local dev stack could not be installed or started."""


class PortInUseError(StackError):
    """A port the dev stack needs is already bound by another process."""

    def __init__(self, service: str, host: str, port: int) -> None:
        super().__init__(
            f"{service} cannot listen on {host}:{port}: the port is already in use. "
            f"Stop whatever holds it (e.g. `ss -ltnp 'sport = :{port}'`) or set another port."
        )
        self.service = service
        self.port = port


class RegistryError(MeshError):
    """A schema registry request failed.

    ``status`` is the HTTP status, ``error_code`` the Confluent error code
    (e.g. 40401 subject not found, 42201 invalid schema).
    """

    def __init__(
        self, message: str, *, status: int, error_code: int, retriable: bool | None = None
    ) -> None:
        super().__init__(message, retriable=retriable if retriable is not None else status >= 500)
        self.status = status
        self.error_code = error_code


class SchemaIncompatibleError(RegistryError):
    """The schema is not compatible with earlier versions under the subject's mode."""


class CodecError(MeshError):
    """An event could not be encoded to or decoded from the Confluent wire format."""


class UnknownSchemaError(CodecError):
    """The message names a schema id that the registry does not know."""


class SourceError(MeshError):
    """A source system failed or refused a request.

    ``retriable`` is true for timeouts, connection errors, 5xx and 429; ``retry_after``
    carries the server's Retry-After (seconds) when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        retriable: bool = False,
        status: int | None = None,
        retry_after: float | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, retriable=retriable)
        self.status = status
        self.retry_after = retry_after
        self.code = code
        """The source's own error code, when it sent one (Directus: ``RECORD_NOT_UNIQUE``)."""


class SourceAuthError(SourceError):
    """The source rejected the adapter's credentials; fix the token or login and restart."""


class SourceDataError(SourceError):
    """An item's data does not fit its entity's schema; it goes to the dead-letter topic."""


class UnavailableError(MeshError):
    """A key cannot be read right now: the fleet is rebalancing, this worker is recovering
    its tables, or the owner did not answer. Always retriable; the message may be shown to
    clients (it names the cause, never data)."""

    retriable = True
    retry_after = 1.0

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ApiError(MeshError):
    """An error answer: HTTP ``status`` with ``{"error": {"code", "message", **extra}}``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message, retriable=status == 503)
        self.status = status
        self.code = code
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON body of the answer."""
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


class SagaError(MeshError):
    """A saga cannot start, or one of its steps failed."""


class SagaInputError(SagaError):
    """A saga request is malformed; the message says which field and why. No saga starts."""


class StepRefusedError(SagaError):
    """A step's business rule refused (an unknown customer, not enough stock): the saga
    compensates at once; retrying would not help."""
