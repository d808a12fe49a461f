"""The dev tooling's settings: the runtime's (:class:`mesh.settings.Settings`) plus the
local stack's ports, caches and Directus admin (``MESH_*`` variables as well)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr

from mesh.settings import Settings


class DevSettings(Settings):
    """What ``mesh dev``, ``mesh registry`` and ``mesh bench`` read besides the runtime's."""

    dev_host: str = "127.0.0.1"
    broker_port: int = Field(default=9092, ge=1, le=65535)
    registry_port: int = Field(default=8081, ge=1, le=65535)
    directus_port: int = Field(default=8055, ge=1, le=65535)
    postgres_port: int = Field(default=15432, ge=1, le=65535)
    issuer_port: int = Field(default=8099, ge=1, le=65535)
    """The dev token issuer's JWKS (``/.well-known/jwks.json``)."""
    """Port of the throwaway Postgres cluster (used only when MESH_DATABASE_URL is unset)."""
    cache_dir: Path = Field(
        default=Path.home() / ".cache" / "dictamesh",
        validation_alias=AliasChoices("MESH_CACHE_DIR"),
    )
    """Downloads reused across runs and clones (the Directus install)."""
    directus_admin_email: str = Field(
        default="admin@example.com",
        validation_alias=AliasChoices("MESH_DIRECTUS_ADMIN_EMAIL", "DIRECTUS_ADMIN_EMAIL"),
    )
    directus_admin_password: SecretStr = Field(
        default=SecretStr("dictamesh"),
        validation_alias=AliasChoices("MESH_DIRECTUS_ADMIN_PASSWORD", "DIRECTUS_ADMIN_PASSWORD"),
    )
    seed_rows: bool = True
    """Seed sample rows into the dev stack's Directus."""
    dev_tenants: int = Field(default=1, ge=1, le=2)
    """How many tenants ``mesh dev`` runs: 2 adds the sample's second tenant (``beta``) with
    a Directus of its own, whose ids collide with the first's on purpose."""
    directus_beta_port: int = Field(default=8056, ge=1, le=65535)
    """Port of the second tenant's Directus (``mesh dev --tenants 2``)."""
