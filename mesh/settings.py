"""The one typed settings model, read from the environment (``MESH_*`` variables).

Secrets (database and Redis URLs, passwords) are :class:`~pydantic.SecretStr`: they
print as ``**********`` and are only unwrapped where a connection is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar, overload
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from mesh.errors import ConfigError
from mesh.samples import SAMPLES


class Settings(BaseSettings):
    """Everything a DictaMesh process reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="MESH_", extra="ignore", frozen=True)

    # --- the fleet -------------------------------------------------------------
    app_id: str = Field(default="dictamesh", pattern=r"^[A-Za-z0-9_.-]+$")
    """Kafka consumer group and topic prefix of Faust's internal topics."""
    broker_url: str = "kafka://127.0.0.1:9092"
    schema_registry_url: str = Field(
        default="http://127.0.0.1:8081",
        validation_alias=AliasChoices("MESH_SCHEMA_REGISTRY_URL", "SCHEMA_REGISTRY_URL"),
    )
    domain_config: Path = SAMPLES / "config" / "domain.yaml"
    """The domain config; the default is the shipped sample (``config/domain.yaml`` of the
    repository). Point it at your own copy: ``mesh init`` writes one to start from."""
    schemas_dir: Path = SAMPLES / "schemas"
    """The Avro schemas of the domain (the shipped sample's by default, as above)."""
    state_dir: Path = Path(".state")
    """Local state (worker tables; the dev stack's services), relative to the working
    directory unless absolute."""
    worker_name: str = Field(default="worker-0", pattern=r"^[A-Za-z0-9_.-]+$")
    """Names this worker's data directory (a StatefulSet pod name in production)."""
    rocksdb_block_cache_mb: int = Field(default=16, ge=1, le=65536)
    """Block cache per table partition; RocksDB's default (2 GiB each) exhausts memory."""
    rocksdb_write_buffer_mb: int = Field(default=4, ge=1, le=4096)
    """Memtable size per table partition (two at most). Every partition of every table has
    its own: with Faust's default (three of 64 MB) a worker with 1M entities passed 3 GB."""
    restore_batched: bool = True
    """Rebuild table partitions that are far behind their changelogs (a new or wiped
    volume) in bulk, many times faster than Faust's record-by-record replay, which stays for
    the last records and when this is off."""
    topic_partitions: int = Field(default=8, ge=1, le=10_000)
    replication_factor: int = Field(default=1, ge=1, le=10)
    rebalance_timeout_s: float = Field(default=10.0, gt=0)
    """Kept short: the first group join waits for it on the dev broker."""
    session_timeout_s: float | None = Field(default=None, gt=0, le=1800)
    """How long the group waits for a silent worker before moving its partitions (unset:
    the rebalance timeout). With static membership, longer than a pod restart (60 s), so a
    rolling restart moves nothing."""
    topic_declare: bool = True
    """Create missing topics at start (with the partitions and replication above). Turn
    off where topics are managed elsewhere (Strimzi ``KafkaTopic`` resources from
    ``mesh topics``): a missing topic is then an error instead of a guess."""

    # --- Kafka and registry security ----------------------------------------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    """CA bundle the brokers' certificates are checked against (unset: the system's)."""
    kafka_ssl_certfile: Path | None = None
    """Client certificate for mutual TLS (Strimzi ``tls`` users); needs the key file."""
    kafka_ssl_keyfile: Path | None = None
    schema_registry_username: str | None = None
    """Basic auth towards the schema registry (with the password below)."""
    schema_registry_password: SecretStr | None = None

    # --- web ---------------------------------------------------------------------
    web_host: str = "127.0.0.1"
    """The host other workers (and the relation check) reach this worker's web server at:
    in a StatefulSet the pod's stable DNS name behind the headless Service."""
    web_bind: str = "127.0.0.1"
    """The address the web server listens on (``0.0.0.0`` in a container)."""
    group_instance_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    """Static group membership (KIP-345): a stable id per worker (the pod name), so a
    restart within the session timeout keeps the worker's partitions instead of moving
    them. Unset: dynamic membership."""
    web_port: int = Field(default=6066, ge=1, le=65535)
    peer_port_offset: int = Field(default=0, ge=0, le=1000)
    """Serve the peer endpoints (``/api/v1/internal/*``) on their own port, the web port plus
    this, and only there, so a Service exposing the web port never exposes them; the same
    for every worker of a fleet. 0: one port serves both."""
    peer_timeout_s: float = Field(default=10.0, gt=0, le=600)
    """How long a worker waits for another's answer (forwarded reads, GraphQL batches, list
    scans, counts, child lookups) before the read fails as unavailable."""
    graphql_introspection: bool = True
    """Answer ``__schema``/``__type`` queries; switch off in production."""
    graphql_error_detail: bool = False
    """Show exception messages and tracebacks in GraphQL errors (development only)."""
    graphql_plan: bool = True
    """Execute the queries a compiled plan covers (entities by id, lists, their fields and
    relations) without graphql-core's per-field executor; false: every query through
    graphql-core (the same answers, at several times the CPU)."""
    graphql_max_depth: int = Field(default=10, ge=1, le=100)
    graphql_max_aliases: int = Field(default=30, ge=1, le=10_000)
    graphql_max_fields: int = Field(default=300, ge=1, le=100_000)
    graphql_max_tokens: int = Field(default=2000, ge=1, le=1_000_000)
    graphql_max_body_kb: int = Field(default=64, ge=1, le=65_536)
    graphql_timeout_s: float = Field(default=5.0, gt=0, le=600)
    graphql_cache_mb: int = Field(default=64, ge=0, le=65_536)
    """Memory for whole GraphQL responses per worker; 0 turns the response cache off."""
    cache_lease_s: float = Field(default=2.0, ge=0.2, le=60)
    """How long a worker's lease on another's invalidations runs (renewed every quarter of
    it): the longest a change waits for a worker that stopped answering, before it is
    written without telling it (see :mod:`mesh.cache.leases`)."""

    # --- authentication -----------------------------------------------------------
    auth: Literal["jwt", "off"] = "jwt"
    """Every GraphQL and REST request carries a bearer JWT. ``off`` is for benchmarks and
    local experiments only: every request then reads as the first tenant of the domain
    config (or the one its ``X-Mesh-Tenant`` header names), with every scope (logged
    loudly, shown in ``/readyz``)."""
    auth_jwks_url: str | None = None
    """Where the issuer publishes its signing keys (JWKS); or a PEM key file below."""
    auth_public_key_file: Path | None = None
    """A PEM public key tokens are signed with (instead of a JWKS URL)."""
    auth_issuer: str | None = None
    """The ``iss`` every token must carry. A worker with ``MESH_AUTH=jwt`` refuses to start
    without it and without exactly one key source above."""
    auth_audience: str = "dictamesh"
    """The ``aud`` every token must include."""
    auth_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    """Signature algorithms accepted (asymmetric only: the key is public)."""
    auth_tenant_claim: str = "tenant"
    auth_scope_claim: str = "scope"
    """A space-separated string or a list of scopes."""
    auth_leeway_s: float = Field(default=30.0, ge=0, le=600)
    """Clock skew allowed on ``exp``, ``nbf`` and ``iat``."""
    auth_max_token_bytes: int = Field(default=4096, ge=256, le=8000)
    """Longer tokens are refused before any parsing."""
    fleet_secret: SecretStr | None = None
    """Shared by the workers of a fleet (and ``mesh relations check``): signs their calls
    to each other's peer endpoints (HMAC). At least 32 characters; required with
    ``MESH_AUTH=jwt``. Unset with ``MESH_AUTH=off``: peer endpoints are open."""
    audit_log: bool = True
    """One line per authenticated request on the ``dictamesh.audit`` logger (turn off where
    an ingress or gateway in front keeps the audit trail)."""
    rate_limit_per_s: float = Field(default=0.0, ge=0, le=1_000_000)
    """Requests per second each authenticated subject (per tenant) may make on average;
    0 (the default) turns the limit off. ``deploy/`` sets 100."""
    rate_limit_burst: int = Field(default=200, ge=1, le=1_000_000)
    """Requests a subject may make at once above that rate."""
    auth_jwks_refresh_s: float = Field(default=30.0, ge=1, le=86_400)
    """At most one JWKS fetch per this many seconds for an unknown key id (a rotation),
    and the keys are fetched again at least every hour."""

    # --- sagas -------------------------------------------------------------------------
    sagas: bool = True
    """Run the sagas (``placeOrder``): needs each tenant's Directus write token
    (``write_token_env`` of its source in the domain config)."""
    saga_deadline_s: float = Field(default=60.0, gt=0, le=86_400)
    """A saga still going forward this long after it started compensates."""
    saga_crash_at: str | None = None
    """Tests only: a saga point at which this worker kills itself once (see
    :mod:`mesh.sagas.faults`); needs ``MESH_SAGA_CRASH_MARKER``."""
    saga_crash_marker: Path | None = None
    """Tests only: the file that says the crash hook has fired."""

    # --- connected services -------------------------------------------------------
    database_url: SecretStr | None = None
    """Postgres for the mirror; unset: no mirror (the dev stack starts a throwaway one)."""
    redis_url: SecretStr | None = None
    """Redis for the fleet's shared cache of cross-worker reads; unset: a worker reads
    other workers' keys from them (responses are cached either way)."""
    cache_ttl_s: int = Field(default=300, ge=1, le=86_400)
    """How long Redis keeps a cached read nobody changes or reads."""

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    """``json``: one JSON object a line, for a log collector; ``console``: aligned text for
    people (``mesh dev`` uses it unless this is set)."""

    @field_validator("domain_config", "schemas_dir", "state_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        # Absolute once read, so a later chdir (or a subprocess) means the same place.
        return path.expanduser().absolute()

    @model_validator(mode="after")
    def _complete_security(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"MESH_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                "MESH_KAFKA_SASL_USERNAME and MESH_KAFKA_SASL_PASSWORD"
            )
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            raise ValueError("set MESH_KAFKA_SSL_CERTFILE and MESH_KAFKA_SSL_KEYFILE together")
        if (self.schema_registry_username is None) != (self.schema_registry_password is None):
            raise ValueError(
                "set MESH_SCHEMA_REGISTRY_USERNAME and MESH_SCHEMA_REGISTRY_PASSWORD together"
            )
        unsafe = [a for a in self.auth_algorithms if not a.startswith(("RS", "PS", "ES", "Ed"))]
        if unsafe:
            raise ValueError(
                f"MESH_AUTH_ALGORITHMS may only name asymmetric algorithms, not {unsafe}"
            )
        return self

    @property
    def registry_auth(self) -> tuple[str, str] | None:
        """``(user, password)`` for the schema registry's basic auth, if configured."""
        if self.schema_registry_username is None or self.schema_registry_password is None:
            return None
        return self.schema_registry_username, self.schema_registry_password.get_secret_value()

    @property
    def bootstrap_servers(self) -> list[str]:
        """``host:port`` list from :attr:`broker_url` (``kafka://a:9092;kafka://b:9092``)."""
        parts = self.broker_url.replace(",", ";").split(";")
        return [p.strip().removeprefix("kafka://") for p in parts if p.strip()]

    @property
    def worker_dir(self) -> Path:
        """Faust's data directory for this worker (tables live below it)."""
        return self.state_dir / "workers" / self.worker_name


SettingsT = TypeVar("SettingsT", bound=Settings)


@overload
def load_settings() -> Settings: ...
@overload
def load_settings(model: type[SettingsT]) -> SettingsT: ...
def load_settings(model: type[Settings] = Settings) -> Settings:
    """Read ``model`` (:class:`Settings` or an extension of it) from the environment; raise
    :class:`ConfigError` if invalid."""
    try:
        return model()
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        if not field:  # a rule across several settings: its message names them
            message = err["msg"].removeprefix("Value error, ")
            raise ConfigError(message, source="environment") from None
        env = field if field.isupper() else f"MESH_{field.upper()}"
        secret = any(word in field.lower() for word in ("password", "url", "token"))
        shown = "" if secret else f" (got {err.get('input')!r})"
        raise ConfigError(f"{err['msg']}{shown}", source="environment", key=env) from None


def redact_url(url: str) -> str:
    """The URL with any password replaced, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))
