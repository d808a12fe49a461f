"""Install Directus 10.10.0 from npm into the dev stack's cache directory, once.

``ensure_installed`` runs ``npm install directus@10.10.0`` under a lock, reports progress and
writes a marker only when npm succeeded, so an interrupted install is resumed next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from mesh.errors import StackError
from mesh_tooling.dev.process import ManagedProcess

__all__ = [
    "CLI",
    "DIRECTUS_VERSION",
    "ensure_installed",
    "file_tail",
    "install_dir_for",
    "is_installed",
    "require_node",
]

DIRECTUS_VERSION = "10.10.0"
"""The Directus release the dev stack runs (Directus 11+ needs Node 22)."""

_MIN_NODE = (18, 17)  # engines.node of @directus/api 18.0.0, which Directus 10.10.0 ships
_MARKER = ".dictamesh-install-complete"
_NPM_LOG = "npm-install.log"
_PROGRESS_EVERY = 10.0
# The CLI entry of the API package. directus/cli.js would first ask registry.npmjs.org for a
# newer release (up to 8 s per start, longer offline) before importing this same file.
CLI = Path("node_modules", "@directus", "api", "dist", "cli", "run.js")


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
        and (install_dir / CLI).is_file()
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


async def require_node() -> str:
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


def file_tail(path: Path, lines: int = 25) -> str:
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
    await require_node()
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
                f"stack again (it resumes). Last lines of {log_path}:\n{file_tail(log_path)}"
            )
        found = _installed_version(install_dir)
        if found != DIRECTUS_VERSION or not (install_dir / CLI).is_file():
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
