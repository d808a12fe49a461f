"""``mesh seed``: seed a Directus that is already running (the compose file's one-shot job,
or any Directus you point it at) with the domain config's collections, the adapters'
service user and sample rows.

Where to seed comes from the domain config, as the adapters read it: each Directus source's
``url`` (the sample's is ``${MESH_DIRECTUS_URL:-…}``) and the static token in the variable
its ``token_env`` names (the sample's ``MESH_DIRECTUS_TOKEN``), which becomes the service
user's token. When the variable its ``write_token_env`` names is set (the sample's
``MESH_DIRECTUS_WRITE_TOKEN``), the sagas' role and user get that token; unset, they are
not made. The admin login is ``MESH_DIRECTUS_ADMIN_EMAIL`` /
``MESH_DIRECTUS_ADMIN_PASSWORD``. Seeding is idempotent (:func:`seed_directus`), so the
job can run on every ``docker compose up``. Neither the token nor the password is printed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from mesh.domain import DomainConfig, load_domain
from mesh.errors import ConfigError, StackError
from mesh_tooling.dev.directus import SeedResult, seed_directus
from mesh_tooling.dev.directus.schema import directus_entities
from mesh_tooling.settings import DevSettings

__all__ = ["MIN_TOKEN_LENGTH", "SeedTarget", "run_seed", "seed_targets", "wait_for_directus"]

MIN_TOKEN_LENGTH = 16
"""What :func:`seed_directus` accepts as a static token."""
PROGRESS_EVERY_S = 5.0
"""How often a wait for Directus says it is still waiting."""


def say(message: str) -> None:
    """One progress line on stdout."""
    print(f"==> {message}", flush=True)


@dataclass(frozen=True)
class SeedTarget:
    """One Directus source of the domain config, and the token its adapter will use."""

    source: str
    url: str
    token_env: str
    token: str = field(repr=False)
    write_token_env: str | None = None
    write_token: str | None = field(default=None, repr=False)
    """The sagas' token (None: the source's ``write_token_env`` is unset or not set)."""


def seed_targets(domain: DomainConfig, environ: Mapping[str, str]) -> list[SeedTarget]:
    """The Directus sources that hold entity types, each with its token read from
    ``environ``; :class:`ConfigError` naming the variable when a token is missing or short."""
    targets = []
    for source in domain.sources:
        if not source.enabled or source.kind != "directus":
            continue  # a disabled source (e.g. a second tenant's) is not running here
        if not directus_entities(domain, source.name):
            continue
        if source.token_env is None:
            # The seed makes a service user with a static token; a login-based source
            # (email_env/password_env) has no token to give it.
            raise ConfigError(
                "mesh seed gives the adapters' service user a static token: set token_env "
                "on this source",
                source="domain config",
                key=f"sources.{source.name}.token_env",
            )
        token = _token(environ, source.token_env, "the static token the Directus adapters use")
        write_token = None
        if source.write_token_env is not None and environ.get(source.write_token_env, ""):
            write_token = _token(
                environ, source.write_token_env, "the static token sagas write to Directus with"
            )
        targets.append(
            SeedTarget(
                source.name,
                source.url.rstrip("/"),
                source.token_env,
                token,
                source.write_token_env,
                write_token,
            )
        )
    if not targets:
        raise StackError(
            "the domain config has no entity types in a Directus source: nothing to seed"
        )
    return targets


def _token(environ: Mapping[str, str], name: str, what: str) -> str:
    """The token in ``environ[name]``; :class:`ConfigError` when it is unset or short."""
    token = environ.get(name, "").strip()
    if len(token) < MIN_TOKEN_LENGTH:
        problem = "is not set" if not token else f"is too short ({len(token)} characters)"
        raise ConfigError(
            f"{problem}: it is {what}, which mesh seed gives its service user; use at least "
            f"{MIN_TOKEN_LENGTH} random characters (e.g. `openssl rand -hex 24`)",
            source="environment",
            key=name,
        )
    return token


async def _health(http: aiohttp.ClientSession, url: str) -> str | None:
    """None when Directus reports itself healthy, else what it said (or why it did not)."""
    try:
        async with http.get(f"{url}/server/health") as resp:
            body: Any = await resp.json(content_type=None)
            status = body.get("status") if isinstance(body, dict) else None
            # "warn" is healthy enough to serve the API (e.g. a slow storage check).
            if resp.status == 200 and status in ("ok", "warn"):
                return None
            return f"HTTP {resp.status}, status {status!r}"
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return str(exc) or type(exc).__name__


async def wait_for_directus(
    url: str,
    timeout: float,
    *,
    progress: Callable[[str], None] = say,
    interval: float = 1.0,
) -> float:
    """Wait until ``GET {url}/server/health`` answers healthy; return the seconds waited.

    Asks at least once (``timeout`` 0 asks once), says every few seconds that it is still
    waiting, and raises :class:`StackError` with the last answer when ``timeout`` passes.
    """
    started = time.monotonic()
    told = started
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        while True:
            problem = await _health(http, url)
            now = time.monotonic()
            if problem is None:
                return now - started
            if now - started >= timeout:
                raise StackError(
                    f"Directus at {url} is not healthy after {timeout:.0f} s "
                    f"(GET /server/health: {problem}); is it running, and is the URL right?"
                )
            if now - told >= PROGRESS_EVERY_S:
                progress(
                    f"waiting for Directus at {url} ({now - started:.0f} of {timeout:.0f} s): "
                    f"{problem}"
                )
                told = now
            await asyncio.sleep(interval)


def _summary(target: SeedTarget, result: SeedResult) -> list[str]:
    width = max((len(c) for c in result.counts), default=0)
    state = "seeded" if result.changed_schema or any(result.created.values()) else "up to date"
    lines = [
        f"Directus {target.url} (source {target.source}): {state} in {result.seconds:.1f} s",
        f"  service user {result.service_email}, token from {target.token_env}",
    ]
    if result.saga_email is not None:
        lines.append(f"  saga user {result.saga_email}, token from {target.write_token_env}")
    lines += [
        f"  {collection:<{width}}  {count:>5} rows ({result.created.get(collection, 0)} new)"
        for collection, count in result.counts.items()
    ]
    return lines


async def _seed(settings: DevSettings, *, rows: bool, wait: float) -> None:
    domain = load_domain(settings.domain_config)
    targets = seed_targets(domain, os.environ)
    password = settings.directus_admin_password.get_secret_value()
    for target in targets:
        say(f"waiting for Directus at {target.url} (up to {wait:.0f} s)")
        waited = await wait_for_directus(target.url, wait)
        say(f"Directus answers ({waited:.0f} s); seeding source {target.source!r}")
        result = await seed_directus(
            target.url,
            settings.directus_admin_email,
            password,
            domain,
            service_token=target.token,
            saga_token=target.write_token,
            rows=rows,
            source=target.source,
            progress=say,
        )
        print("\n".join(_summary(target, result)), flush=True)


def run_seed(settings: DevSettings, *, rows: bool = True, wait: float = 120.0) -> int:
    """``mesh seed``: seed every Directus source of the domain config; 0 when done.

    ``rows`` False seeds collections and the service user only. Failures raise
    :class:`~mesh.errors.MeshError` subclasses, which the CLI prints as one line.
    """
    asyncio.run(_seed(settings, rows=rows and settings.seed_rows, wait=wait))
    return 0
