"""The broker and the schema registry, started for the session or by a test of its own.

Modules that name topics after collections start a broker of their own, so that other
tests' events never mix with theirs.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from mesh_tooling.dev.broker import start_broker
from mesh_tooling.dev.process import ManagedProcess, free_port


async def own_broker(cleanup: contextlib.AsyncExitStack, logs: Path) -> str:
    """Start a Kafka-protocol broker (Tansu, memory storage) on a free port, logging into
    ``logs``; ``cleanup`` stops it. Returns its ``host:port``."""
    port = free_port()
    proc = await start_broker("127.0.0.1", port, logs)
    cleanup.push_async_callback(proc.stop)
    return f"127.0.0.1:{port}"


@dataclass
class RestartableBroker:
    """A broker of a test's own that it can restart on the same address. Memory storage:
    a restart empties it, as recreating a cluster's Kafka state would."""

    host: str
    port: int
    logs: Path
    proc: ManagedProcess

    @property
    def bootstrap(self) -> str:
        """Its ``host:port``."""
        return f"{self.host}:{self.port}"

    async def restart(self) -> None:
        """Stop it and start an empty one on the same port."""
        await self.proc.stop()
        self.proc = await start_broker(self.host, self.port, self.logs)

    async def stop(self) -> None:
        """Stop it."""
        await self.proc.stop()


async def restartable_broker(cleanup: contextlib.AsyncExitStack, logs: Path) -> RestartableBroker:
    """Like :func:`own_broker`, but restartable on the same port."""
    port = free_port()
    broker = RestartableBroker("127.0.0.1", port, logs, await start_broker("127.0.0.1", port, logs))
    cleanup.push_async_callback(broker.stop)  # whichever process runs by then
    return broker


async def start_registry(data: Path, log_dir: Path) -> tuple[ManagedProcess, str]:
    """Run ``mesh registry`` as a user would, on a free port, storing into ``data``."""
    port = free_port()
    proc = ManagedProcess(
        "schema registry",
        [sys.executable, "-m", "mesh", "registry", "--port", str(port), "--data", str(data)],
        log_path=log_dir / f"registry-{port}.log",
    )
    await proc.start()
    url = f"http://127.0.0.1:{port}"

    async def probe() -> bool:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/subjects") as resp:
            return resp.status == 200

    await proc.wait_ready(probe, timeout=30)
    return proc, url
