"""The broker and the schema registry, started for the session or by a test of its own.

Modules that name topics after collections start a broker of their own, so that other
tests' events never mix with theirs.
"""

from __future__ import annotations

import contextlib
import sys
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
