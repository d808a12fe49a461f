"""The domain config file: sources, entity types, their fields, keys and relations.

It is the one place a domain is declared. Avro ``after`` records, GraphQL types and
Postgres mirror columns are all derived from it, so it is validated as a whole at
start: a bad file stops the process with :class:`~mesh.errors.ConfigError` naming the
file, the key and what is wrong.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mesh.errors import ConfigError

_SNAKE = r"^[a-z][a-z0-9_]*$"
_PASCAL = r"^[A-Z][A-Za-z0-9]*$"
SnakeName = Annotated[str, Field(pattern=_SNAKE)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldType(StrEnum):
    """Logical field types a domain can use; each maps to Avro, GraphQL and SQL."""

    STRING = "string"
    INTEGER = "integer"
    LONG = "long"
    FLOAT = "float"
    BOOLEAN = "boolean"
    DECIMAL = "decimal"
    TIMESTAMP = "timestamp"


_UNIQUE_TYPES = (FieldType.STRING, FieldType.INTEGER, FieldType.LONG)
"""Types a unique field may have: exact values an idempotency key is made of."""


class FieldSpec(_Model):
    """One field of an entity type."""

    type: FieldType
    nullable: bool = False
    precision: int | None = Field(default=None, ge=1, le=38)
    scale: int | None = Field(default=None, ge=0, le=38)
    references: SnakeName | None = None
    """Forward (many-to-one) relation: the entity type this field holds the id of."""
    requires_scopes: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9:._-]{1,64}$")]] = []
    """Scopes a caller's token must all carry to read the field (e.g. ``[pii:read]``);
    without them GraphQL answers ``null`` with an error, REST leaves the field out. Only
    on nullable plain fields (a forward relation or the key cannot be withheld)."""
    unique: bool = False
    """No two rows of the entity type (per source) hold the same value. Directus enforces
    it with a unique index: a duplicate write answers 400 ``RECORD_NOT_UNIQUE``, which is
    what sagas use for idempotency (a retried create of the same key fails instead of
    creating a second row). Nulls do not collide. Not on the key (unique already) or on
    decimal, float, boolean and timestamp fields."""

    @model_validator(mode="after")
    def _decimal_has_precision(self) -> Self:
        if self.type is FieldType.DECIMAL:
            if self.precision is None or self.scale is None:
                raise ValueError("a decimal field needs both 'precision' and 'scale'")
            if self.scale > self.precision:
                raise ValueError("'scale' cannot be larger than 'precision'")
        elif self.precision is not None or self.scale is not None:
            raise ValueError("'precision' and 'scale' only apply to decimal fields")
        if self.unique and self.type not in _UNIQUE_TYPES:
            raise ValueError(
                f"a {self.type.value} field cannot be unique (only "
                f"{', '.join(t.value for t in _UNIQUE_TYPES)} fields can)"
            )
        return self


class ReverseRelation(_Model):
    """A one-to-many relation seen from the referenced side (``customer.invoices``)."""

    entity: SnakeName
    field: SnakeName


class EntitySpec(_Model):
    """An entity type: where it comes from, its key, fields and reverse relations."""

    graphql_name: Annotated[str, Field(pattern=_PASCAL)]
    sources: list[str] = Field(min_length=1)
    """The sources feeding the type, at most one per tenant, all of one kind (they share
    the type's topic; the tenant in each key and event keeps them apart)."""
    collection: Annotated[str, Field(pattern=r"^[A-Za-z0-9_]+$")]
    key: SnakeName = "id"
    fields: dict[SnakeName, FieldSpec] = Field(min_length=1)
    reverse_relations: dict[SnakeName, ReverseRelation] = Field(default_factory=dict)


TenantName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")]
"""Short enough to name a Postgres role after (``dictamesh_tenant_<name>``)."""


class SourceSpec(_Model):
    """A source instance the adapters poll; it holds the data of exactly one tenant."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]*$")]
    tenant: TenantName
    kind: Literal["directus"]
    enabled: bool = True
    """A disabled source is declared (its tenant's entities keep their topics) but never
    polled: e.g. a second instance only some environments run."""
    url: str
    token_env: str | None = None
    """Env var holding a static token."""
    write_token_env: str | None = None
    """Env var holding the static token sagas write to this source with: a role of its
    own (create and update on the collections a saga writes, no delete), never the
    adapter's, which stays read-only. Unset: no saga writes to this source."""
    email_env: str | None = None
    """Env vars holding a login (used when no static token is set); tokens are refreshed."""
    password_env: str | None = None
    poll_interval_ms: int = Field(default=250, ge=10, le=600_000)
    page_size: int = Field(default=500, ge=1, le=10_000)
    """Activity rows per page and item ids per batch read."""
    request_timeout_s: float = Field(default=10.0, gt=0, le=600)
    backoff_base_ms: int = Field(default=200, ge=1)
    backoff_max_ms: int = Field(default=30_000, ge=1)

    @model_validator(mode="after")
    def _credentials(self) -> Self:
        if self.token_env is None and (self.email_env is None or self.password_env is None):
            raise ValueError("set 'token_env', or both 'email_env' and 'password_env'")
        if self.backoff_max_ms < self.backoff_base_ms:
            raise ValueError("'backoff_max_ms' must be at least 'backoff_base_ms'")
        if self.write_token_env is not None and self.write_token_env == self.token_env:
            raise ValueError(
                "'write_token_env' must name another variable than 'token_env': sagas write "
                "with a role of their own, the adapter's stays read-only"
            )
        return self


class DomainConfig(_Model):
    """The whole domain config file."""

    version: int = Field(ge=1, le=2)
    tenants: list[TenantName] = Field(min_length=1)
    """Every tenant whose data the mesh holds; each source belongs to one of them."""
    topic_per_tenant: bool = False
    """Give each tenant its own change topics, ``<tenant>.<collection>.<kind>.entity_changed``,
    so a broker's prefixed ACLs can fence tenants apart; by default the tenants of an
    entity type share its topic (the key and a header carry the tenant). Changing it
    moves every event to other topics: decide before the first deployment."""
    sources: list[SourceSpec] = Field(min_length=1)
    entities: dict[SnakeName, EntitySpec] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _upgrade_version_1(cls, data: Any) -> Any:
        # Version 1 had one top-level tenant and one source per entity type: it reads as
        # version 2 with that tenant on every source, so existing files keep working.
        if not isinstance(data, dict) or data.get("version") != 1:
            return data
        data = dict(data)
        tenant = data.pop("tenant", None)
        if tenant is None:
            raise ValueError("version 1 needs a top-level 'tenant' (version 2: 'tenants')")
        data["tenants"] = [tenant]
        data["sources"] = [
            {"tenant": tenant, **s} if isinstance(s, dict) else s for s in data.get("sources", [])
        ]
        entities = data.get("entities")
        if isinstance(entities, dict):
            data["entities"] = {
                name: _one_source_to_list(entity) for name, entity in entities.items()
            }
        return data

    @model_validator(mode="after")
    def _cross_references(self) -> Self:
        source_names = [s.name for s in self.sources]
        if len(set(source_names)) != len(source_names):
            raise ValueError(f"source names must be unique, got {source_names}")
        if len(set(self.tenants)) != len(self.tenants):
            raise _CrossRefError("tenants", f"tenant names must be unique, got {self.tenants}")
        for i, source in enumerate(self.sources):
            if source.tenant not in self.tenants:
                raise _CrossRefError(
                    f"sources.{i}.tenant",
                    f"unknown tenant '{source.tenant}' (declared: {self.tenants})",
                )
        for name, entity in self.entities.items():
            for field_name, spec in entity.fields.items():
                if spec.references is not None and spec.references not in self.entities:
                    raise _CrossRefError(
                        f"entities.{name}.fields.{field_name}.references",
                        f"unknown entity type '{spec.references}'",
                    )
        seen_graphql: dict[str, str] = {}
        seen_topics: dict[str, str] = {}
        for name, entity in self.entities.items():
            where = f"entities.{name}"
            self._check_entity_sources(where, entity)
            if entity.key not in entity.fields:
                raise _CrossRefError(f"{where}.key", f"key field '{entity.key}' is not in fields")
            if entity.fields[entity.key].nullable:
                raise _CrossRefError(f"{where}.fields.{entity.key}", "the key cannot be nullable")
            if entity.fields[entity.key].unique:
                raise _CrossRefError(
                    f"{where}.fields.{entity.key}.unique",
                    "the key is unique already (it is the primary key): drop 'unique'",
                )
            for field_name, spec in entity.fields.items():
                if not spec.requires_scopes:
                    continue
                if field_name == entity.key or spec.references is not None or not spec.nullable:
                    raise _CrossRefError(
                        f"{where}.fields.{field_name}.requires_scopes",
                        "only a nullable plain field can require scopes (a withheld value "
                        "reads as null; the key and forward relations cannot be withheld)",
                    )
            other = seen_graphql.get(entity.graphql_name)
            if other is not None:
                raise _CrossRefError(
                    f"{where}.graphql_name", f"'{entity.graphql_name}' is already used by {other}"
                )
            seen_graphql[entity.graphql_name] = name
            for topic in self.topics(name):
                if topic in seen_topics:
                    raise _CrossRefError(
                        f"{where}.collection",
                        f"topic '{topic}' is already used by {seen_topics[topic]}",
                    )
                seen_topics[topic] = name
            for rel_name, rel in entity.reverse_relations.items():
                rwhere = f"{where}.reverse_relations.{rel_name}"
                if rel_name in entity.fields:
                    raise _CrossRefError(rwhere, "the name clashes with a field of the same entity")
                target = self.entities.get(rel.entity)
                if target is None:
                    raise _CrossRefError(f"{rwhere}.entity", f"unknown entity type '{rel.entity}'")
                ref_field = target.fields.get(rel.field)
                if ref_field is None or ref_field.references != name:
                    raise _CrossRefError(
                        f"{rwhere}.field",
                        f"'{rel.entity}.{rel.field}' must be a field with 'references: {name}'",
                    )
        return self

    def _check_entity_sources(self, where: str, entity: EntitySpec) -> None:
        known = [s.name for s in self.sources]
        tenants: dict[str, str] = {}
        kinds = set()
        for i, name in enumerate(entity.sources):
            if name not in known:
                raise _CrossRefError(
                    f"{where}.sources.{i}", f"unknown source '{name}' (known: {known})"
                )
            source = self.source(name)
            other = tenants.get(source.tenant)
            if other is not None:
                raise _CrossRefError(
                    f"{where}.sources.{i}",
                    f"sources '{other}' and '{name}' both feed tenant '{source.tenant}': one "
                    "entity id would mean two entities",
                )
            tenants[source.tenant] = name
            kinds.add(source.kind)
        if len(kinds) > 1:
            raise _CrossRefError(
                f"{where}.sources",
                f"the sources are of several kinds {sorted(kinds)}; they share one topic, "
                "so they must be of one kind",
            )

    def source(self, name: str) -> SourceSpec:
        """The source named ``name`` (validated to exist for every entity)."""
        return next(s for s in self.sources if s.name == name)

    def entity_sources(self, entity_type: str) -> list[SourceSpec]:
        """The sources feeding ``entity_type``, one per tenant."""
        return [self.source(name) for name in self.entities[entity_type].sources]

    def topic(self, entity_type: str, tenant: str | None = None) -> str:
        """The change topic of ``tenant``'s entities of a type:
        ``<collection>.<source kind>.entity_changed``, shared by the type's tenants (keys
        and events carry the tenant), or with :attr:`topic_per_tenant`
        ``<tenant>.<collection>.<source kind>.entity_changed`` (``tenant`` None: the first
        tenant feeding the type)."""
        entity = self.entities[entity_type]
        first = self.source(entity.sources[0])
        shared = f"{entity.collection}.{first.kind}.entity_changed"
        if not self.topic_per_tenant:
            return shared
        return f"{tenant or first.tenant}.{shared}"

    def topics(self, entity_type: str) -> list[str]:
        """Every change topic of an entity type (one per tenant with
        :attr:`topic_per_tenant`)."""
        if not self.topic_per_tenant:
            return [self.topic(entity_type)]
        return [self.topic(entity_type, s.tenant) for s in self.entity_sources(entity_type)]

    def topic_types(self) -> dict[str, str]:
        """Every change topic and the entity type whose events it carries."""
        return {topic: t for t in self.entities for topic in self.topics(t)}

    def has_tenant(self, tenant: str) -> bool:
        """True for a tenant the config declares."""
        return tenant in self.tenants

    @staticmethod
    def urn(tenant: str, entity_type: str, entity_id: str) -> str:
        """The entity's URN: ``urn:dictamesh:<tenant>:<entity_type>:<id>``."""
        return f"urn:dictamesh:{tenant}:{entity_type}:{entity_id}"

    def unindexed_references(self) -> list[str]:
        """``<entity>.<field>`` of every reference no reverse relation indexes.

        Sources that clear references silently when the referenced row is deleted (Directus'
        ``ON DELETE SET NULL``) are caught up through the reverse relation index; without one
        such a change stays unseen until the referencing row changes again.
        """
        indexed = {
            (rel.entity, rel.field)
            for entity in self.entities.values()
            for rel in entity.reverse_relations.values()
        }
        return [
            f"{name}.{field}"
            for name, entity in self.entities.items()
            for field, spec in entity.fields.items()
            if spec.references is not None and (name, field) not in indexed
        ]


def tenant_of(urn: str) -> str:
    """The tenant of a URN ``urn:dictamesh:<tenant>:<entity_type>:<id>``."""
    return urn.split(":", 3)[2]


def _one_source_to_list(entity: Any) -> Any:
    if isinstance(entity, dict) and "source" in entity and "sources" not in entity:
        entity = dict(entity)
        entity["sources"] = [entity.pop("source")]
    return entity


class _CrossRefError(ValueError):
    """A cross-reference problem, carrying the dotted key it concerns."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_domain(data: Any, *, source: str = "<domain config>") -> DomainConfig:
    """Validate already-parsed YAML data; raise :class:`ConfigError` on the first problem."""
    if not isinstance(data, dict):
        raise ConfigError("the file must hold a mapping at the top level", source=source)
    try:
        return DomainConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        ctx_error = err.get("ctx", {}).get("error")
        if isinstance(ctx_error, _CrossRefError):
            raise ConfigError(ctx_error.message, source=source, key=ctx_error.key) from None
        message = re.sub(r"^Value error, ", "", err["msg"])
        if err["type"] == "extra_forbidden":
            message = "unknown key (check its spelling and indentation)"
        elif err["type"] == "missing":
            message = "required key is missing"
        raise ConfigError(message, source=source, key=_dotted(err["loc"])) from None


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(data: Any, *, source: str) -> Any:
    """``data`` with ``${VAR}`` and ``${VAR:-default}`` in its strings read from the environment."""
    if isinstance(data, dict):
        return {key: expand_env(value, source=source) for key, value in data.items()}
    if isinstance(data, list):
        return [expand_env(value, source=source) for value in data]
    if not isinstance(data, str):
        return data

    def value(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if found is not None:
            return found
        if default is not None:
            return default
        raise ConfigError(f"${{{name}}} is used but the variable is not set", source=source)

    return _ENV_REF.sub(value, data)


def load_domain(path: Path) -> DomainConfig:
    """Read and validate the domain config file at ``path`` (``${VAR:-default}`` expanded)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", source=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{problem}{where}", source=str(path)) from None
    return parse_domain(expand_env(data, source=str(path)), source=str(path))
