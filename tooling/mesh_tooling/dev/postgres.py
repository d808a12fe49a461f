"""Postgres for the dev stack: the server at ``MESH_DATABASE_URL`` when set, otherwise a
throwaway cluster under the state directory, initialised on first use and kept between runs."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
from psycopg2 import sql

from mesh.errors import StackError
from mesh.settings import redact_url
from mesh_tooling.dev.process import ManagedProcess, require_free_port

_SEARCH_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def postgres_bindir() -> Path:
    """The directory holding ``initdb`` and ``postgres``: PATH, pg_config or Debian's layout."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    for candidate in _SEARCH_DIRS:
        if (candidate / "initdb").exists():
            return candidate
    raise StackError(
        "the PostgreSQL server binaries (initdb, postgres) were not found; install them "
        "(Debian: `apt-get install postgresql`) or point MESH_DATABASE_URL at a running server"
    )


def _as_postgres_user() -> list[str]:
    """Postgres refuses to run as root: run its binaries as the 'postgres' user then."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise StackError(
            "running as root, and PostgreSQL refuses to run as root, but there is no "
            "'postgres' user; create one or set MESH_DATABASE_URL"
        ) from None
    return ["runuser", "-u", "postgres", "--"]


def _chown_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        os.chown(path, entry.pw_uid, entry.pw_gid)


async def start_throwaway_postgres(host: str, port: int, state_dir: Path) -> ManagedProcess:
    """Start (initialising on first use) a cluster in ``state_dir/postgres`` on ``port``."""
    require_free_port("the throwaway Postgres", host, port)
    bindir = postgres_bindir()
    root = state_dir / "postgres"
    data = root / "data"
    sockets = root / "sockets"
    for path in (root, sockets):
        path.mkdir(parents=True, exist_ok=True)
        _chown_to_postgres(path)
    prefix = _as_postgres_user()
    if not (data / "PG_VERSION").exists():
        init = await asyncio.create_subprocess_exec(
            *prefix,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await init.communicate()
        if init.returncode != 0:
            raise StackError(f"initdb failed:\n{out.decode(errors='replace')[-2000:]}")
    proc = ManagedProcess(
        "Postgres",
        [
            *prefix,
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(sockets),
            "-c",
            f"listen_addresses={host}",
            "-c",
            "fsync=off",
        ],
        log_path=state_dir / "logs" / "postgres.log",
        stop_signal=signal.SIGINT,  # "fast" shutdown: do not wait for clients to leave
    )
    await proc.start()
    url = f"postgresql://postgres@{host}:{port}/postgres"

    async def probe() -> bool:
        return await asyncio.to_thread(can_connect, url)

    await proc.wait_ready(probe, timeout=60)
    return proc


def can_connect(url: str) -> bool:
    try:
        psycopg2.connect(url, connect_timeout=2).close()
    except psycopg2.OperationalError:
        return False
    return True


def database_url(server_url: str, database: str) -> str:
    """``server_url`` with its database replaced by ``database``."""
    parts = urlsplit(server_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def ensure_database(server_url: str, database: str) -> str:
    """Create ``database`` on the server of ``server_url`` unless it exists; return its URL."""
    try:
        conn = psycopg2.connect(server_url, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        raise StackError(
            f"cannot connect to Postgres ({redact_url(server_url)}): {str(exc).strip()}"
        ) from None
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    except psycopg2.Error as exc:
        raise StackError(f"cannot create database '{database}': {str(exc).strip()}") from None
    finally:
        conn.close()
    return database_url(server_url, database)
