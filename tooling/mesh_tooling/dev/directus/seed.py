"""Seed a running Directus with the sample domain through its REST API.

From the domain config it creates, for every entity type whose source is a Directus source:
the collection (integer auto-increment ``id``), its fields with matching Directus types, a
many-to-one relation for every ``references:`` field, a read-only role and service user
for the adapters (with the static token the caller passes), when asked a role and user
for the sagas (their own token: create and update, no delete), and deterministic sample
rows.

Everything is idempotent: what exists is left alone (missing fields, relations and
permissions are added), and a collection that already holds rows gets no new ones, so a
second run on a seeded Directus writes nothing and takes ~0.7 s (0.5 s of it is the login
stall Directus adds against timing attacks).

The steps live in :mod:`.schema` (collections, fields, relations), :mod:`.access` (roles,
permissions, service users) and :mod:`.rows` (sample rows); :func:`seed_directus` runs them.

Usage::

    token = load_or_create_token(state_dir)        # the dev stack persists it
    saga_token = load_or_create_token(state_dir, "saga-token")
    result = await seed_directus(directus.url, admin_email, admin_password, domain,
                                 service_token=token, saga_token=saga_token, progress=print)
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from mesh.domain import DomainConfig
from mesh.errors import StackError
from mesh_tooling.dev.directus.access import (
    SAGA_EMAIL,
    SERVICE_EMAIL,
    ensure_saga_user,
    ensure_service_user,
)
from mesh_tooling.dev.directus.client import DirectusClient
from mesh_tooling.dev.directus.rows import DEFAULT_ROWS, seed_rows
from mesh_tooling.dev.directus.schema import directus_entities, ensure_schema
from mesh_tooling.dev.directus.settings import write_private_file

__all__ = ["SeedResult", "generate_service_token", "load_or_create_token", "seed_directus"]


def generate_service_token() -> str:
    """A new random static token for the service user."""
    return secrets.token_urlsafe(32)


def load_or_create_token(state_dir: Path, name: str = "directus-service-token") -> str:
    """The service token saved in ``state_dir``, generated (mode 0600) on first use."""
    path = state_dir / name
    try:
        token = path.read_text("utf-8").strip()
    except FileNotFoundError:
        token = ""
    if token:
        return token
    state_dir.mkdir(parents=True, exist_ok=True)
    token = generate_service_token()
    write_private_file(path, token + "\n")
    return token


@dataclass(frozen=True)
class SeedResult:
    """What :func:`seed_directus` left in Directus."""

    service_email: str
    service_token: str = field(repr=False)
    saga_email: str | None
    """The sagas' service user (None: not asked for)."""
    counts: Mapping[str, int]
    """Rows per collection after seeding, e.g. ``{"customers": 50, ...}``."""
    created: Mapping[str, int]
    """Rows inserted by this run per collection (all zero on a second run)."""
    changed_schema: bool
    """True when this run created a collection, field, relation, role or permission."""
    seconds: float


async def seed_directus(
    base_url: str,
    admin_email: str,
    admin_password: str,
    domain: DomainConfig,
    *,
    service_token: str,
    service_email: str = SERVICE_EMAIL,
    saga_token: str | None = None,
    saga_email: str = SAGA_EMAIL,
    rows: Mapping[str, int] | bool = True,
    source: str | None = None,
    seed: int = 2026,
    progress: Callable[[str], None] = lambda _line: None,
) -> SeedResult:
    """Create the domain's collections, fields, relations, the adapters' service user (with
    ``service_token`` as its static token), the sagas' (with ``saga_token``, when given) and
    sample rows in the Directus at ``base_url``.

    ``rows`` gives sample rows per entity type (``True``: :data:`DEFAULT_ROWS`, ``False``: no
    rows, only schema and user); ``source`` limits seeding to entity types of
    that source (default: every entity type whose source kind is ``directus``). Idempotent;
    raises :class:`StackError` with Directus' message when a call fails.
    """
    started = time.monotonic()
    if len(service_token) < 16:
        raise StackError("the Directus service token must be at least 16 characters long")
    if saga_token is not None and len(saga_token) < 16:
        raise StackError("the Directus saga token must be at least 16 characters long")
    if saga_token == service_token:
        raise StackError("the saga token must differ from the adapters' read-only token")
    entities = directus_entities(domain, source)
    if not entities:
        raise StackError(
            f"the domain config has no entity types in a Directus source"
            f"{f' named {source!r}' if source else ''}: nothing to seed"
        )
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        api = await DirectusClient.login(http, base_url, admin_email, admin_password)
        changed = await ensure_schema(api, domain, entities, progress)
        collections = [e.collection for e in entities.values()]
        changed |= await ensure_service_user(
            api, collections, service_email, service_token, progress
        )
        if saga_token is not None:
            changed |= await ensure_saga_user(api, collections, saga_email, saga_token, progress)
        per_type: Mapping[str, int] = (
            (DEFAULT_ROWS if rows else dict.fromkeys(entities, 0))
            if isinstance(rows, bool)
            else rows
        )
        counts, created = await seed_rows(api, entities, per_type, seed, progress)
    took = time.monotonic() - started
    if changed or any(created.values()):
        total = sum(created.values())
        progress(f"Directus seeded in {took:.1f} s ({total} sample rows)")
    return SeedResult(
        service_email=service_email,
        service_token=service_token,
        saga_email=saga_email if saga_token is not None else None,
        counts=counts,
        created=created,
        changed_schema=changed,
        seconds=took,
    )
