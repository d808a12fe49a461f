"""What one Directus of the dev stack runs with: its settings, its persisted ``KEY`` and
``SECRET``, and the environment variables made from them."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from mesh.errors import StackError

__all__ = [
    "DirectusSecrets",
    "DirectusSettings",
    "directus_environment",
    "load_or_create_secrets",
    "write_private_file",
]


@dataclass(frozen=True)
class DirectusSecrets:
    """Directus' ``KEY`` (instance id) and ``SECRET`` (signs access tokens and sessions)."""

    key: str
    secret: str = field(repr=False)


def load_or_create_secrets(state_dir: Path) -> DirectusSecrets:
    """Read ``KEY``/``SECRET`` from ``state_dir``, generating and saving them (mode 0600) the
    first time, so logins and sessions survive restarts of the stack."""
    path = state_dir / "directus-secrets.json"
    try:
        data = json.loads(path.read_text("utf-8"))
        return DirectusSecrets(key=str(data["key"]), secret=str(data["secret"]))
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StackError(
            f"cannot read Directus secrets from {path} ({exc}); fix or delete the file "
            "(deleting it logs everyone out)."
        ) from None
    state_dir.mkdir(parents=True, exist_ok=True)
    created = DirectusSecrets(key=secrets.token_hex(16), secret=secrets.token_urlsafe(48))
    write_private_file(path, json.dumps({"key": created.key, "secret": created.secret}))
    return created


def write_private_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (mode 0600), atomically: the
    file is whole or absent. The directory must exist."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    tmp.replace(path)


@dataclass(frozen=True)
class DirectusSettings:
    """Everything one Directus instance of the dev stack needs."""

    install_dir: Path
    """The directory :func:`ensure_installed` returned."""
    database_url: str = field(repr=False)
    """``postgresql://user[:password]@host:port/dbname``; the database must exist."""
    state_dir: Path
    """Holds secrets, uploads, extensions, temp files and ``directus.log``."""
    admin_email: str
    admin_password: str = field(repr=False)
    """Used by ``bootstrap`` to create the admin user of a database that has none; changing
    them later does not change the admin of an already bootstrapped database."""
    host: str = "127.0.0.1"
    port: int = 8055
    public_url: str | None = None
    """Defaults to ``http://<host>:<port>`` (``127.0.0.1`` for a wildcard host)."""
    extra_env: dict[str, str] = field(default_factory=dict)
    """More Directus env vars; they override the defaults set here."""

    @property
    def url(self) -> str:
        """The base URL clients use, without a trailing slash."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


def directus_environment(settings: DirectusSettings) -> dict[str, str]:
    """The Directus env vars for ``settings`` (includes secrets)."""
    s = settings
    keys = load_or_create_secrets(s.state_dir)
    state = s.state_dir.resolve()
    env = {
        "DB_CLIENT": "pg",
        "DB_CONNECTION_STRING": s.database_url,
        "HOST": s.host,
        "PORT": str(s.port),
        "PUBLIC_URL": s.url,
        "KEY": keys.key,
        "SECRET": keys.secret,
        "ADMIN_EMAIL": s.admin_email,
        "ADMIN_PASSWORD": s.admin_password,
        # Directus reads CONFIG_PATH (default ./.env) *over* the process env: point it at
        # a file we never create so a stray .env cannot change the stack's settings.
        "CONFIG_PATH": str(state / "directus.env"),
        # No phoning home from a dev box (telemetry.directus.io).
        "TELEMETRY": "false",
        # One process, schema changed through the API: the data cache would only serve
        # stale reads to tests; limiters would turn bursts (seed, tests) into 429/503.
        "CACHE_ENABLED": "false",
        "RATE_LIMITER_ENABLED": "false",
        "RATE_LIMITER_GLOBAL_ENABLED": "false",
        "PRESSURE_LIMITER_ENABLED": "false",
        # Warnings and errors only, as JSON lines: the log file is for diagnosis.
        "LOG_LEVEL": "warn",
        "LOG_STYLE": "raw",
        # Dev boxes have no sendmail; skip the mail transport check Directus does on
        # every mail service construction (it only logs a warning each time).
        "EMAIL_VERIFY_SETUP": "false",
        # Everything Directus writes stays in the state dir, not in cwd or the npm cache.
        "EXTENSIONS_PATH": str(state / "extensions"),
        "STORAGE_LOCAL_ROOT": str(state / "uploads"),
        "TEMP_PATH": str(state / "tmp"),
        "MIGRATIONS_PATH": str(state / "migrations"),
        # Where Directus looks for extensions installed as npm packages: the install.
        "PACKAGE_FILE_LOCATION": str(s.install_dir.resolve()),
    }
    env.update(s.extra_env)
    return env
