"""Directus 10.10.0 for the local dev stack: install, run and seed it.

Order of use::

    install_dir = await ensure_installed(cache_dir, progress=print)        # install.py
    directus = DirectusService(DirectusSettings(install_dir=install_dir,    # service.py
                                                database_url=..., state_dir=...,
                                                admin_email=..., admin_password=...))
    await directus.bootstrap()   # idempotent: installs system tables + admin on a fresh database
    await directus.start()       # waits for GET /server/health
    token = load_or_create_token(state_dir)                                 # seed.py
    saga_token = load_or_create_token(state_dir, "saga-token")
    result = await seed_directus(directus.url, admin_email, admin_password, domain,
                                 service_token=token, saga_token=saga_token, progress=print)
    ...
    await directus.stop()

Modules: ``install`` (npm install into the cache), ``settings`` (settings, secrets, env
vars), ``database`` (bootstrap state of the database), ``service`` (the server process),
``client`` (REST client), ``schema``, ``access`` and ``rows`` (the seed's steps) and
``seed`` (the seed's entry point and service token).
"""

from mesh_tooling.dev.directus.access import (
    SAGA_ACCESS,
    SAGA_EMAIL,
    SAGA_ROLE,
    SERVICE_EMAIL,
    SERVICE_ROLE,
    SYSTEM_READ_COLLECTIONS,
)
from mesh_tooling.dev.directus.client import DirectusClient
from mesh_tooling.dev.directus.install import (
    DIRECTUS_VERSION,
    ensure_installed,
    install_dir_for,
    is_installed,
)
from mesh_tooling.dev.directus.rows import DEFAULT_ROWS
from mesh_tooling.dev.directus.seed import (
    SeedResult,
    generate_service_token,
    load_or_create_token,
    seed_directus,
)
from mesh_tooling.dev.directus.service import DirectusService
from mesh_tooling.dev.directus.settings import (
    DirectusSecrets,
    DirectusSettings,
    load_or_create_secrets,
)

__all__ = [
    "DEFAULT_ROWS",
    "DIRECTUS_VERSION",
    "SAGA_ACCESS",
    "SAGA_EMAIL",
    "SAGA_ROLE",
    "SERVICE_EMAIL",
    "SERVICE_ROLE",
    "SYSTEM_READ_COLLECTIONS",
    "DirectusClient",
    "DirectusSecrets",
    "DirectusService",
    "DirectusSettings",
    "SeedResult",
    "ensure_installed",
    "generate_service_token",
    "install_dir_for",
    "is_installed",
    "load_or_create_secrets",
    "load_or_create_token",
    "seed_directus",
]
