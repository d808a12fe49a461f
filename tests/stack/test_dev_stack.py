"""``mesh dev`` (what ``make dev`` runs) driven the way a user drives it: start it, read
what it prints, use every URL it names, press Ctrl-C, and check nothing is left behind.
The first run has both tenants (``--tenants 2``: a second Directus of its own)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from mesh_tooling.dev.process import free_port, port_is_free

pytestmark = [pytest.mark.stack, pytest.mark.directus]


@dataclass
class Stack:
    proc: asyncio.subprocess.Process
    output: list[str]
    ports: dict[str, int]
    state: Path

    def line(self, label: str) -> str:
        """The value the summary printed after ``label``."""
        for text in self.output:
            match = re.match(rf"^\s+{re.escape(label)}\s{{2,}}(.*)$", text)
            if match:
                return match.group(1).strip()
        raise AssertionError(f"no '{label}' line in:\n" + "\n".join(self.output))


PORTS = ("broker", "registry", "directus", "directus_beta", "web", "postgres", "issuer")
"""The ports of a dev stack, each taken from a free one per test."""


def _env(ports: dict[str, int], state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(
        MESH_STATE_DIR=str(state),
        MESH_BROKER_PORT=str(ports["broker"]),
        MESH_REGISTRY_PORT=str(ports["registry"]),
        MESH_DIRECTUS_PORT=str(ports["directus"]),
        MESH_DIRECTUS_BETA_PORT=str(ports["directus_beta"]),
        MESH_WEB_PORT=str(ports["web"]),
        MESH_POSTGRES_PORT=str(ports["postgres"]),
        MESH_ISSUER_PORT=str(ports["issuer"]),
        MESH_REBALANCE_TIMEOUT_S="3",
        **extra,
    )
    return env


async def _start(ports: dict[str, int], state: Path, **extra: str) -> Stack:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesh", "dev",
        env=_env(ports, state, **extra),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert proc.stdout is not None
    output: list[str] = []

    async def read_until_ready() -> None:
        assert proc.stdout is not None
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                raise AssertionError("mesh dev exited:\n" + "\n".join(output))
            output.append(raw.decode().rstrip())
            if "Press Ctrl-C" in output[-1]:
                return

    try:
        await asyncio.wait_for(read_until_ready(), 900)
    except BaseException:
        proc.kill()
        raise
    return Stack(proc, output, ports, state)


async def _interrupt(stack: Stack) -> int:
    stack.proc.send_signal(signal.SIGINT)
    assert stack.proc.stdout is not None
    rest = await asyncio.wait_for(stack.proc.stdout.read(), 120)
    stack.output.extend(rest.decode().splitlines())
    return await stack.proc.wait()


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if text in cmdline or text.encode() in environ:
            found.append(f"{entry.name}: {cmdline}")
    return found


@pytest_asyncio.fixture(scope="module")
async def first_run(session_dir: Path) -> AsyncIterator[Stack]:
    ports = {name: free_port() for name in PORTS}
    stack = await _start(ports, session_dir / "dev-stack", MESH_DEV_TENANTS="2")
    yield stack
    if stack.proc.returncode is None:
        await _interrupt(stack)


async def test_every_printed_url_answers(first_run: Stack) -> None:
    stack = first_run
    assert stack.line("Kafka broker").startswith(f"kafka://127.0.0.1:{stack.ports['broker']}")
    with socket.create_connection(("127.0.0.1", stack.ports["broker"]), timeout=5):
        pass
    registry = stack.line("Schema registry")
    directus = stack.line("Directus (default)").removesuffix("/admin")
    email, password = stack.line("admin login").split(" / ")
    token = stack.line("adapter token").split()[0]
    worker = stack.line("Worker").split()[0].removesuffix("/healthz")
    assert email == "admin@example.com"
    assert password == "dictamesh"
    assert "throwaway" not in stack.line("Postgres")  # the URL, not a description
    assert stack.line("Redis").startswith("in-process cache")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{registry}/subjects") as resp:
            assert resp.status == 200
            assert isinstance(await resp.json(content_type=None), list)
        async with http.post(
            f"{directus}/auth/login", json={"email": email, "password": password}
        ) as resp:
            assert resp.status == 200, await resp.text()
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(
            f"{directus}/items/customers", params={"limit": "5"}, headers=headers
        ) as resp:
            assert resp.status == 200, await resp.text()
            assert len((await resp.json())["data"]) == 5
        for path in ("/healthz", "/readyz", "/metrics"):
            async with http.get(f"{worker}{path}") as resp:
                assert resp.status == 200, path
        # Entities need the bearer token the stack printed: its own issuer signed it and
        # serves the keys the worker checks it with.
        assert stack.line("Token issuer").endswith(
            f"http://127.0.0.1:{stack.ports['issuer']}/.well-known/jwks.json)"
        )
        dev_token = stack.line("token (default)").split()[0]
        entity = f"{worker}/api/v1/entities/customer/1"
        async with http.get(entity) as resp:
            assert resp.status == 401
            assert resp.headers["WWW-Authenticate"].startswith("Bearer ")
        async with http.get(entity, headers={"Authorization": f"Bearer {dev_token}"}) as resp:
            assert resp.status == 200, await resp.text()
            mine = await resp.json()
        # The second tenant: its own Directus, its own token, its own customer 1.
        beta = stack.line("Directus (beta)").removesuffix("/admin")
        assert beta == f"http://127.0.0.1:{stack.ports['directus_beta']}"
        async with http.get(f"{beta}/server/health") as resp:
            assert resp.status == 200
        beta_token = stack.line("token (beta)").split()[0]
        async with http.get(entity, headers={"Authorization": f"Bearer {beta_token}"}) as resp:
            assert resp.status == 200, await resp.text()
            theirs = await resp.json()
        assert (mine["urn"], theirs["urn"]) == (
            "urn:dictamesh:default:customer:1",
            "urn:dictamesh:beta:customer:1",
        )
        assert mine["data"] != theirs["data"]
        # The sagas' token: its own user, which writes but never deletes.
        saga = {"Authorization": f"Bearer {stack.line('saga token').split()[0]}"}
        async with http.get(f"{directus}/items/customers/1", headers=saga) as resp:
            assert resp.status == 200, await resp.text()
        async with http.delete(f"{directus}/items/invoices/1", headers=saga) as resp:
            assert resp.status == 403, await resp.text()


async def test_the_worker_has_each_tenants_saga_token(first_run: Stack) -> None:
    tokens = [line.split()[2] for line in first_run.output if line.strip().startswith("saga ")]
    assert len(tokens) == 2  # one per tenant's Directus
    for name, token in zip(("MESH_DIRECTUS", "MESH_DIRECTUS_BETA"), tokens, strict=True):
        assert _processes_mentioning(f"{name}_WRITE_TOKEN={token}"), name


async def test_ready_means_the_sources_follow_their_feeds(first_run: Stack) -> None:
    """The "stack ready" line comes after the first snapshot: a write made now is a change
    event."""
    assert any("the sources follow their change feeds" in line for line in first_run.output)
    worker = first_run.line("Worker").split()[0].removesuffix("/healthz")
    async with aiohttp.ClientSession() as http, http.get(f"{worker}/metrics") as resp:
        text = await resp.text()
    assert 'dictamesh_source_state{source="directus"} 2.0' in text
    assert 'dictamesh_source_state{source="directus_beta"} 2.0' in text


async def test_changes_in_directus_reach_kafka_and_the_bench_measures_them(
    first_run: Stack,
) -> None:
    """The stack's worker captures Directus writes: `mesh bench freshness` sees each one on
    Kafka and, with `--through graphql`, in the worker's GraphQL answers."""
    ports = first_run.ports
    env = {
        **_env(ports, first_run.state),
        "MESH_BROKER_URL": f"kafka://127.0.0.1:{ports['broker']}",
        "MESH_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{ports['registry']}",
        "MESH_DIRECTUS_URL": f"http://127.0.0.1:{ports['directus']}",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesh", "bench", "freshness", "--items", "5", "--bulk", "600",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    text = out.decode()
    assert proc.returncode == 0, text
    delay = re.search(r"write → event delay: p50 (\d+) ms, p99 (\d+) ms", text)
    assert delay is not None, text
    assert 0 < int(delay.group(1)) <= int(delay.group(2))
    assert re.search(r"bulk load of 600: Directus accepted \d+ items/s", text), text
    # Through GraphQL: each write (new items and renames) until the worker's answer shows it.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesh", "bench", "freshness", "--through", "graphql",
        "--items", "6", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 180)
    text = out.decode()
    assert proc.returncode == 0, text
    visible = re.search(
        r"write → visible in GraphQL, 6 writes: p50 (\d+) ms, p99 (\d+) ms, max (\d+) ms "
        r"— SLO p99 < 2 s: (met|NOT met)",
        text,
    )
    assert visible is not None, text
    assert 0 < int(visible.group(1)) <= int(visible.group(2)) <= int(visible.group(3))
    assert re.search(r"creates  \(3\): p50 \d+ ms", text), text
    assert re.search(r"renames  \(3\): p50 \d+ ms", text), text


async def test_ctrl_c_stops_everything(first_run: Stack) -> None:
    code = await _interrupt(first_run)
    assert code == 0, "\n".join(first_run.output)
    assert first_run.output[-1] == "==> stopped"
    for name, port in first_run.ports.items():
        assert port_is_free("127.0.0.1", port), f"{name} still listening on {port}"
    assert _processes_mentioning(str(first_run.state)) == []


async def test_a_second_run_reuses_everything_and_uses_redis_when_set(
    first_run: Stack, redis_url: str
) -> None:
    if first_run.proc.returncode is None:
        await _interrupt(first_run)
    stack = await _start(first_run.ports, first_run.state, MESH_REDIS_URL=redis_url)
    try:
        assert stack.line("Redis") == redis_url
        assert not any("installing Directus" in line for line in stack.output)
        # Seeding again added nothing (the bench above added customers, not the seed).
        assert not any("sample rows to" in line for line in stack.output)
        assert any("sample rows to" in line for line in first_run.output)
        assert stack.line("adapter token") == first_run.line("adapter token")
        assert stack.line("saga token") == first_run.line("saga token")
        ready = next(line for line in stack.output if "stack ready in" in line)
        print(f"second start: {ready}")
    finally:
        assert await _interrupt(stack) == 0


async def test_a_port_in_use_is_named_and_nothing_starts(tmp_path: Path) -> None:
    ports = {name: free_port() for name in PORTS}
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports["registry"]))
        squatter.listen()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mesh", "dev",
            env=_env(ports, tmp_path),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert f"the schema registry cannot listen on 127.0.0.1:{ports['registry']}" in err.decode()
    assert "Traceback" not in err.decode()
    for name, port in ports.items():
        if name != "registry":
            assert port_is_free("127.0.0.1", port), name


async def test_an_unreachable_redis_is_named_and_nothing_starts(tmp_path: Path) -> None:
    ports = {name: free_port() for name in PORTS}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesh", "dev",
        env=_env(ports, tmp_path, MESH_REDIS_URL="redis://:s3cret@127.0.0.1:9/0"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1
    assert "Redis at MESH_REDIS_URL does not answer" in err.decode()
    assert "s3cret" not in (out + err).decode()
    assert "starting the Kafka broker" not in out.decode()
    for port in ports.values():
        assert port_is_free("127.0.0.1", port)
