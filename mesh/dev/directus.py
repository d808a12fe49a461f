"""Directus 10.10.0 for the local dev stack: install from npm, bootstrap, start and stop.

Order of use::

    install_dir = await ensure_installed(cache_dir, progress=print)
    directus = DirectusService(DirectusSettings(install_dir=install_dir, database_url=...,
                                                state_dir=..., admin_email=..., admin_password=...))
    await directus.bootstrap()   # idempotent: installs system tables + admin on a fresh database
    await directus.start()       # waits for GET /server/health
    ...
    await directus.stop()

Directus runs as ``node @directus/api/dist/cli/run.js`` in its own process group, so stopping
it stops the real server (an ``npx`` wrapper would be a different process).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from mesh.dev.process import ManagedProcess, require_free_port
from mesh.errors import StackError

__all__ = [
    "DIRECTUS_VERSION",
    "DirectusSecrets",
    "DirectusService",
    "DirectusSettings",
    "ensure_installed",
    "install_dir_for",
    "is_installed",
    "load_or_create_secrets",
]

DIRECTUS_VERSION = "10.10.0"
"""The Directus release the dev stack runs (Directus 11+ needs Node 22)."""

_MIN_NODE = (18, 17)  # engines.node of @directus/api 18.0.0, which Directus 10.10.0 ships
_MARKER = ".dictamesh-install-complete"
_NPM_LOG = "npm-install.log"
_PROGRESS_EVERY = 10.0
# The CLI entry of the API package. directus/cli.js would first ask registry.npmjs.org for a
# newer release (up to 8 s per start, longer offline) before importing this same file.
_CLI = Path("node_modules", "@directus", "api", "dist", "cli", "run.js")


# --------------------------------------------------------------------------------- install


def install_dir_for(cache_dir: Path) -> Path:
    """Where :func:`ensure_installed` puts Directus inside ``cache_dir``."""
    return cache_dir / f"directus-{DIRECTUS_VERSION}"


def _installed_version(install_dir: Path) -> str | None:
    try:
        manifest = json.loads(
            (install_dir / "node_modules" / "directus" / "package.json").read_text("utf-8")
        )
    except (OSError, ValueError):
        return None
    version = manifest.get("version") if isinstance(manifest, dict) else None
    return version if isinstance(version, str) else None


def is_installed(install_dir: Path) -> bool:
    """True when a complete install of Directus :data:`DIRECTUS_VERSION` is in ``install_dir``.

    Complete means npm finished successfully (the marker is written only then) and the
    files are still there; a half-done or pruned install is not complete.
    """
    try:
        marker = (install_dir / _MARKER).read_text("utf-8").strip()
    except OSError:
        return False
    return (
        marker == DIRECTUS_VERSION
        and _installed_version(install_dir) == DIRECTUS_VERSION
        and (install_dir / _CLI).is_file()
    )


async def _tool_output(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise StackError(
            f"`{' '.join(argv)}` failed (exit {proc.returncode}): {out.decode(errors='replace')}"
        )
    return out.decode(errors="replace").strip()


async def _require_node() -> str:
    """The path of a Node.js new enough for Directus 10.10, or a StackError saying what to do."""
    node = shutil.which("node")
    if node is None:
        raise StackError(
            "Node.js is not installed (no `node` on PATH); Directus needs Node 20. "
            "Install Node.js 20 LTS (e.g. `apt-get install nodejs npm` or from nodejs.org)."
        )
    version = await _tool_output(node, "--version")
    match = re.match(r"v(\d+)\.(\d+)", version)
    if match is None or (int(match[1]), int(match[2])) < _MIN_NODE:
        raise StackError(
            f"Node.js {version} at {node} is too old for Directus {DIRECTUS_VERSION} "
            f"(needs >= {_MIN_NODE[0]}.{_MIN_NODE[1]}); install Node.js 20 LTS."
        )
    return node


@contextlib.asynccontextmanager
async def _install_lock(lock_path: Path, progress: Callable[[str], None]) -> AsyncIterator[None]:
    """Hold an exclusive lock so two stacks (or a stack and a test run) never run npm in the
    same directory at once; the OS drops it if the holder dies."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        started = time.monotonic()
        next_note = 0.0
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited >= next_note:
                    progress(
                        f"waiting for another Directus install to finish ({lock_path})… "
                        f"{waited:.0f} s"
                    )
                    next_note += _PROGRESS_EVERY
                await asyncio.sleep(0.5)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _file_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text("utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


async def ensure_installed(cache_dir: Path, progress: Callable[[str], None]) -> Path:
    """Install ``directus@10.10.0`` with npm into ``cache_dir / "directus-10.10.0"`` unless a
    complete install is already there, and return that directory.

    A marker file is written only after npm exits 0 and the installed version checks out,
    so an interrupted install is resumed (npm keeps what it already fetched). An install
    without the marker (e.g. made by hand) is verified by re-running ``npm install``, which
    takes seconds when nothing is missing. ``progress`` gets one line every ~10 s.
    Raises :class:`StackError` when node/npm are missing or npm fails (with its log's tail).
    """
    install_dir = install_dir_for(cache_dir)
    if is_installed(install_dir):
        return install_dir
    await _require_node()
    npm = shutil.which("npm")
    if npm is None:
        raise StackError(
            "npm is not installed (no `npm` on PATH); it ships with Node.js 20 LTS. "
            "Install it (e.g. `apt-get install npm`) and try again."
        )
    install_dir.mkdir(parents=True, exist_ok=True)
    async with _install_lock(cache_dir / f"directus-{DIRECTUS_VERSION}.lock", progress):
        if is_installed(install_dir):  # another process finished it while we waited
            return install_dir
        with contextlib.suppress(FileNotFoundError):
            (install_dir / _MARKER).unlink()
        package_json = install_dir / "package.json"
        if not package_json.exists():
            package_json.write_text(
                json.dumps({"name": "dictamesh-directus", "private": True}) + "\n", "utf-8"
            )
        if _installed_version(install_dir) == DIRECTUS_VERSION:
            what = f"checking the Directus {DIRECTUS_VERSION} install in {install_dir}"
        else:
            what = (
                f"installing Directus {DIRECTUS_VERSION} from npm (first run only, ~3 min, ~440 MB)"
            )
        log_path = install_dir / _NPM_LOG
        with contextlib.suppress(FileNotFoundError):
            log_path.unlink()
        npm_proc = ManagedProcess(
            "npm install",
            [
                npm,
                "install",
                "--no-audit",
                "--no-fund",
                "--no-update-notifier",
                "--save-exact",
                "--loglevel=warn",
                f"directus@{DIRECTUS_VERSION}",
            ],
            log_path=log_path,
            cwd=install_dir,
        )
        started = time.monotonic()
        progress(f"{what}…")
        await npm_proc.start()
        waiter = asyncio.ensure_future(npm_proc.wait())
        try:
            # npm's own output is noisy: report elapsed time instead, every ~10 s.
            while not (await asyncio.wait({waiter}, timeout=_PROGRESS_EVERY))[0]:
                progress(f"{what}… {time.monotonic() - started:.0f} s")
            code = waiter.result()
        finally:
            waiter.cancel()
            # Cancelled (Ctrl-C) or failed: leave no npm or node-gyp children behind.
            await npm_proc.stop()
        if code != 0:
            raise StackError(
                f"`npm install directus@{DIRECTUS_VERSION}` failed (exit {code}) in {install_dir}. "
                f"Check network access to the npm registry and free disk space, then run the "
                f"stack again (it resumes). Last lines of {log_path}:\n{_file_tail(log_path)}"
            )
        found = _installed_version(install_dir)
        if found != DIRECTUS_VERSION or not (install_dir / _CLI).is_file():
            raise StackError(
                f"npm finished but {install_dir} holds Directus {found or 'nothing'}, not "
                f"{DIRECTUS_VERSION}; delete that directory and run the stack again."
            )
        tmp = install_dir / f"{_MARKER}.tmp"
        tmp.write_text(DIRECTUS_VERSION + "\n", "utf-8")
        tmp.replace(install_dir / _MARKER)  # atomic: the marker is whole or absent
        took = time.monotonic() - started
        progress(f"Directus {DIRECTUS_VERSION} ready in {install_dir} ({took:.0f} s)")
    return install_dir


# --------------------------------------------------------------------------------- secrets


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
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"key": created.key, "secret": created.secret}, out)
    tmp.replace(path)
    return created


# --------------------------------------------------------------------------------- service


def _log_message(line: str) -> str | None:
    """The message of one Directus log line (JSON with LOG_STYLE=raw), if it is one."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    level = entry.get("level")
    if not isinstance(level, int) or level < 40:  # pino: 40 warn, 50 error, 60 fatal
        return None
    msg = entry.get("msg")
    return str(msg) if msg else None


def _redact(url: str) -> str:
    """The database URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


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


class DirectusService:
    """One Directus server: ``bootstrap()`` once per database, then ``start()``/``stop()``.

    Also an async context manager (bootstrap + start on enter, stop on exit).
    """

    def __init__(self, settings: DirectusSettings) -> None:
        self.settings = settings
        self.log_path = settings.state_dir / "directus.log"
        self._process: ManagedProcess | None = None
        self._node: str | None = None

    @property
    def url(self) -> str:
        """The base URL of the API (``/server/health``, ``/items/...``)."""
        return self.settings.url

    @property
    def running(self) -> bool:
        """True while the server process runs."""
        return self._process is not None and self._process.running

    def environment(self) -> dict[str, str]:
        """The Directus env vars this service runs with (includes secrets)."""
        s = self.settings
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

    def _prepare(self) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        cli = s.install_dir / _CLI
        if not cli.is_file():
            raise StackError(
                f"Directus is not installed in {s.install_dir} ({cli} is missing); "
                "call ensure_installed() first."
            )
        for sub in ("extensions", "uploads", "tmp", "migrations"):
            (s.state_dir / sub).mkdir(parents=True, exist_ok=True)
        assert self._node is not None
        return [self._node, str(cli.resolve())], self.environment()

    async def _database_state(self) -> tuple[bool, str | None, bool]:
        """(system tables installed, id of an admin role, an active admin user exists).

        Also fails fast with a clear message: Directus itself retries for 25 s, then prints
        a stack trace, when the database is down or missing.
        """
        url = self.settings.database_url
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql") or not parts.path.strip("/"):
            raise StackError(
                f"Directus database URL {_redact(url)!r} is not a PostgreSQL URL; "
                "use postgresql://user[:password]@host:port/dbname."
            )
        import psycopg2  # installed with aiopg; imported here so importing this module is cheap

        def query() -> tuple[bool, str | None, bool]:
            conn = psycopg2.connect(url, connect_timeout=5)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT to_regclass('directus_users') IS NOT NULL")
                    row = cur.fetchone()
                    if not (row and row[0]):
                        return False, None, False
                    cur.execute(
                        "SELECT id FROM directus_roles WHERE admin_access ORDER BY name LIMIT 1"
                    )
                    role = cur.fetchone()
                    cur.execute(
                        "SELECT EXISTS (SELECT 1 FROM directus_users u JOIN directus_roles r"
                        " ON r.id = u.role WHERE r.admin_access AND u.status = 'active')"
                    )
                    admin = cur.fetchone()
                    return True, str(role[0]) if role else None, bool(admin and admin[0])
            finally:
                conn.close()

        try:
            return await asyncio.to_thread(query)
        except psycopg2.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StackError(
                f"Directus cannot use its database {_redact(url)}: {reason}. "
                "Start PostgreSQL and create the database (e.g. `createdb "
                f"{parts.path.strip('/')}`), or fix the database URL."
            ) from None

    async def _cli(self, *args: str) -> str:
        """Run one short Directus CLI command and return its stdout; StackError on failure."""
        argv, env = self._prepare()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **env},
            cwd=self.settings.state_dir,
            start_new_session=True,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 120)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise StackError(f"`directus {args[0]} {args[1]}` did not finish in 120 s") from None
        text = out.decode(errors="replace").strip()
        if proc.returncode != 0:
            messages = [m for m in map(_log_message, text.splitlines()) if m]
            reason = "; ".join(messages) or "\n".join(text.splitlines()[-5:])
            raise StackError(f"`directus {args[0]} {args[1]}` failed: {reason}")
        return text.splitlines()[-1] if text else ""

    async def _create_admin(self, admin_role: str | None) -> None:
        """Create the admin user (and role) on an installed database that has none."""
        s = self.settings
        if admin_role is None:
            admin_role = await self._cli("roles", "create", "--role", "Administrator", "--admin")
        try:
            await self._cli(
                "users",
                "create",
                "--email",
                s.admin_email,
                "--password",
                s.admin_password,
                "--role",
                admin_role,
            )
        except StackError as exc:
            hint = ""
            if "email" in str(exc).lower():
                hint = (
                    " Directus accepts only addresses under a public top-level domain"
                    " (e.g. admin@example.com; not .local, .test or .localhost)."
                )
            raise StackError(
                f"Directus could not create its admin user {s.admin_email!r}: "
                f"{str(exc).rstrip('.')}.{hint}"
            ) from None

    async def _run_bootstrap(self, max_wait: float) -> int:
        argv, env = self._prepare()
        proc = ManagedProcess(
            "directus bootstrap",
            [*argv, "bootstrap"],
            log_path=self.log_path,
            env=env,
            cwd=self.settings.state_dir,
        )
        await proc.start()
        try:
            return await asyncio.wait_for(proc.wait(), max_wait)
        except TimeoutError:
            raise StackError(
                f"`directus bootstrap` did not finish within {max_wait:.0f} s; "
                f"last lines of {self.log_path}:\n{proc.log_tail()}"
            ) from None
        finally:
            await proc.stop()

    async def bootstrap(self, max_wait: float = 300.0) -> None:
        """Run ``directus bootstrap``: on a fresh database it installs the system tables and
        migrations and creates the admin user; on an installed one it only runs pending
        migrations (so it is safe to call before every start).

        Directus creates the admin only in the same run that installs the tables, so a run
        that failed in between (an email Directus rejects, Ctrl-C) would leave a database
        nobody can log in to; such a database gets its admin user here.
        """
        if self._node is None:
            self._node = await _require_node()
        self._prepare()
        await self._database_state()  # clear errors for a missing server or database
        code = await self._run_bootstrap(max_wait)
        installed, admin_role, has_admin = await self._database_state()
        if installed and not has_admin:
            await self._create_admin(admin_role)
            if code != 0:  # it failed creating the admin: let it finish its other steps
                code = await self._run_bootstrap(max_wait)
        if code != 0:
            raise StackError(
                f"`directus bootstrap` failed (exit {code}); "
                f"last lines of {self.log_path}:\n{_file_tail(self.log_path)}"
            )

    async def start(self, max_wait: float = 120.0) -> None:
        """Start ``directus start`` and wait until ``GET /server/health`` reports ok.

        Raises :class:`~mesh.errors.PortInUseError` when the port is taken, and
        :class:`StackError` with the log's tail when Directus exits or is not healthy in time.
        """
        if self.running:
            return
        s = self.settings
        require_free_port("Directus", s.host, s.port)
        if self._node is None:
            self._node = await _require_node()
        argv, env = self._prepare()
        proc = ManagedProcess(
            "Directus", [*argv, "start"], log_path=self.log_path, env=env, cwd=s.state_dir
        )
        self._process = proc
        await proc.start()
        health = f"{self.url}/server/health"
        timeout_cfg = aiohttp.ClientTimeout(total=3)

        async with aiohttp.ClientSession(timeout=timeout_cfg) as http:

            async def healthy() -> bool:
                try:
                    async with http.get(health) as resp:
                        if resp.status != 200:
                            return False
                        body: Any = await resp.json(content_type=None)
                except (aiohttp.ClientError, ValueError):
                    return False
                return isinstance(body, dict) and body.get("status") in ("ok", "warn")

            try:
                await proc.wait_ready(healthy, max_wait)
            except BaseException:
                await self.stop()
                raise

    async def stop(self, grace: float = 10.0) -> None:
        """Stop the server (SIGTERM to its process group, SIGKILL after ``grace`` s)."""
        proc, self._process = self._process, None
        if proc is not None:
            await proc.stop(grace)

    async def __aenter__(self) -> Self:
        await self.bootstrap()
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
