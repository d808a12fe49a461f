"""Child processes of the dev stack: started in their own process group, logged to a
file, awaited until ready and stopped as a whole group, so Ctrl-C leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from mesh.errors import PortInUseError, StackError


def port_is_free(host: str, port: int) -> bool:
    """True when nothing listens on ``host:port`` and we could bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_free_port(service: str, host: str, port: int) -> None:
    """Raise :class:`PortInUseError` naming ``service`` when ``port`` is taken."""
    if not port_is_free(host, port):
        raise PortInUseError(service, host, port)


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS considers free right now (for tests and throwaway services)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Poll until a TCP connect to ``host:port`` succeeds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


class ManagedProcess:
    """One child process of the stack, with its own process group and log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.stop_signal = stop_signal
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs."""
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """True while the child has not exited."""
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        """Start the child with stdout and stderr appended to its log file."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env} if self.env is not None else None
        with self.log_path.open("ab") as log:
            try:
                self._proc = await asyncio.create_subprocess_exec(
                    *self.argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    cwd=self.cwd,
                    start_new_session=True,
                )
            except OSError as exc:
                raise StackError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from None

    async def wait_ready(self, probe: Callable[[], Awaitable[bool]], timeout: float) -> None:
        """Call ``probe`` until it returns True; fail with the log's tail if the child dies."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise StackError(
                    f"{self.name} exited during start-up (code {self.returncode}); "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                if await probe():
                    return
            await asyncio.sleep(0.2)
        raise StackError(
            f"{self.name} was not ready after {timeout:.0f} s; "
            f"last lines of {self.log_path}:\n{self.log_tail()}"
        )

    @property
    def returncode(self) -> int | None:
        """The exit code once the child has exited."""
        return self._proc.returncode if self._proc else None

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the child's log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    async def wait(self) -> int:
        """Wait for the child to exit and return its code."""
        assert self._proc is not None, "wait() before start()"
        return await self._proc.wait()

    async def kill(self) -> None:
        """SIGKILL the process group, as a crash would: no shutdown of any kind."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        self._signal_group(proc.pid, signal.SIGKILL)
        await proc.wait()

    async def stop(self, grace: float = 10.0) -> None:
        """Signal the child's process group to stop, then SIGKILL it after ``grace`` seconds."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        self._signal_group(proc.pid, self.stop_signal)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            self._signal_group(proc.pid, signal.SIGKILL)
            await proc.wait()
        # Grandchildren (npx → node) may outlive the leader; make sure the group is gone.
        self._signal_group(proc.pid, signal.SIGKILL)

    @staticmethod
    def _signal_group(pgid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
