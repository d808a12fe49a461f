"""``mesh worker`` as an operator runs it: against the real broker, with the RocksDB store."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from mesh_tooling.dev.process import ManagedProcess, free_port, port_is_free

from tests.support.auth import worker_env


@pytest_asyncio.fixture(scope="module")
async def worker(broker: str, session_dir: Path) -> AsyncIterator[dict[str, object]]:
    # Not tests.support.workers.MeshWorker: that names the worker, and these tests check the
    # CLI's own defaults (worker-0) and how its process ends on a signal.
    state = session_dir / "worker-state"
    port = free_port()
    proc = ManagedProcess(
        "worker",
        [sys.executable, "-m", "mesh", "worker"],
        log_path=session_dir / "logs" / "worker.log",
        env={
            "MESH_BROKER_URL": f"kafka://{broker}",
            "MESH_STATE_DIR": str(state),
            "MESH_WEB_PORT": str(port),
            "MESH_APP_ID": "worker-test",
            "MESH_ROCKSDB_BLOCK_CACHE_MB": "8",
            "MESH_REBALANCE_TIMEOUT_S": "3",
            **worker_env(),
        },
    )
    await proc.start()
    base = f"http://127.0.0.1:{port}"

    async def ready() -> bool:
        async with aiohttp.ClientSession() as http, http.get(f"{base}/readyz") as resp:
            return resp.status == 200

    await proc.wait_ready(ready, timeout=90)
    yield {"proc": proc, "base": base, "port": port, "state": state}
    await proc.stop()


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


async def test_health_readiness_and_metrics(worker: dict[str, object]) -> None:
    base = worker["base"]
    status, body = await _get(f"{base}/healthz")
    assert status == 200
    assert '"status": "ok"' in body or '"status":"ok"' in body
    status, body = await _get(f"{base}/readyz")
    assert status == 200
    assert re.search(r'"tables_recovered":\s*true', body)
    status, metrics = await _get(f"{base}/metrics")
    assert status == 200
    assert 'dictamesh_build_info{version="0.1.0",worker="worker-0"} 1.0' in metrics
    assert "dictamesh_worker_ready 1.0" in metrics
    active = re.search(r"^dictamesh_worker_active_partitions (\S+)$", metrics, re.M)
    assert active is not None
    assert float(active.group(1)) >= 1


async def test_tables_use_rocksdb_with_the_block_cache_capped(worker: dict[str, object]) -> None:
    state = worker["state"]
    assert isinstance(state, Path)
    tables = state / "workers" / "worker-0" / "v1" / "tables"
    logs = sorted(tables.glob("entities_*.db/LOG"))
    assert logs, f"no RocksDB catalog table under {tables}: {list(tables.iterdir())}"
    for log in logs:
        # RocksDB logs its block cache settings; 8 MiB as configured, not the 2 GiB default.
        text = log.read_text(errors="replace")
        assert re.search(r"capacity\s*:\s*8388608\b", text), f"block cache not capped: {log}"


async def test_sigterm_stops_the_worker_and_frees_its_port(worker: dict[str, object]) -> None:
    proc = worker["proc"]
    assert isinstance(proc, ManagedProcess)
    assert proc.pid is not None
    os.kill(proc.pid, signal.SIGTERM)
    code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0, proc.log_tail()
    assert port_is_free("127.0.0.1", int(str(worker["port"])))


@pytest.mark.usefixtures("broker")
async def test_worker_with_bad_domain_config_exits_with_one_message(tmp_path: Path) -> None:
    bad = tmp_path / "domain.yaml"
    bad.write_text("version: 2\ntenants: [Bad Tenant]\nsources: []\nentities: {}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesh", "worker",
        env={**os.environ, "MESH_DOMAIN_CONFIG": str(bad), "MESH_STATE_DIR": str(tmp_path)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    text = err.decode()
    assert text.startswith(f"mesh: configuration error: {bad}, key 'tenants.0'")
    assert "Traceback" not in text


@pytest.mark.usefixtures("broker")
async def test_worker_without_token_settings_refuses_to_start_saying_what_to_set(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_AUTH")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesh", "worker",
        env={**env, "MESH_STATE_DIR": str(tmp_path)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    text = err.decode()
    assert "MESH_AUTH_JWKS_URL" in text, text
    assert "MESH_AUTH_PUBLIC_KEY_FILE" in text
    assert "MESH_AUTH=off" in text
    assert "Traceback" not in text
