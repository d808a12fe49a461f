"""Run one Directus server of the dev stack: bootstrap its database, start and stop it.

Directus runs as ``node @directus/api/dist/cli/run.js`` in its own process group, so stopping
it stops the real server (an ``npx`` wrapper would be a different process).
"""

from __future__ import annotations

import asyncio
import json
import os
from types import TracebackType
from typing import Any, Self

import aiohttp

from mesh.errors import StackError
from mesh_tooling.dev.directus.database import database_state
from mesh_tooling.dev.directus.install import CLI, file_tail, require_node
from mesh_tooling.dev.directus.settings import DirectusSettings, directus_environment
from mesh_tooling.dev.process import ManagedProcess, require_free_port

__all__ = ["DirectusService"]


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
        return directus_environment(self.settings)

    def _prepare(self) -> tuple[list[str], dict[str, str]]:
        s = self.settings
        cli = s.install_dir / CLI
        if not cli.is_file():
            raise StackError(
                f"Directus is not installed in {s.install_dir} ({cli} is missing); "
                "call ensure_installed() first."
            )
        for sub in ("extensions", "uploads", "tmp", "migrations"):
            (s.state_dir / sub).mkdir(parents=True, exist_ok=True)
        assert self._node is not None
        return [self._node, str(cli.resolve())], self.environment()

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
            self._node = await require_node()
        self._prepare()
        await database_state(
            self.settings.database_url
        )  # clear errors for a missing server or database
        code = await self._run_bootstrap(max_wait)
        installed, admin_role, has_admin = await database_state(self.settings.database_url)
        if installed and not has_admin:
            await self._create_admin(admin_role)
            if code != 0:  # it failed creating the admin: let it finish its other steps
                code = await self._run_bootstrap(max_wait)
        if code != 0:
            raise StackError(
                f"`directus bootstrap` failed (exit {code}); "
                f"last lines of {self.log_path}:\n{file_tail(self.log_path)}"
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
            self._node = await require_node()
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
