"""``mesh seed``, run as the compose file's one-shot job runs it: the real command against a
real Directus 10.10.0 of its own (a fresh database, so the first run has everything to do).

The command is started before Directus is, so its ``--wait`` is exercised the way a
compose job started ahead of Directus needs it.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from mesh_tooling.dev.directus import (
    DEFAULT_ROWS,
    SAGA_EMAIL,
    SERVICE_EMAIL,
    DirectusClient,
    DirectusService,
    DirectusSettings,
    generate_service_token,
)
from mesh_tooling.dev.process import free_port
from mesh_tooling.seed import PROGRESS_EVERY_S

from mesh.domain import DomainConfig
from tests.fixtures.directus import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.support.directus_admin import counts

MESH = Path(sys.executable).with_name("mesh")
"""The console script a user runs, from the same virtualenv as the tests."""


@dataclass(frozen=True)
class Run:
    """One finished ``mesh seed``."""

    code: int
    stdout: str
    stderr: str


def seed_env(url: str | None, token: str | None, saga_token: str | None = None) -> dict[str, str]:
    """The environment of a seed job: ours without any MESH_* or Directus variable, plus
    the Directus URL, the admin login and the tokens when given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "DIRECTUS_"))}
    env |= {
        "MESH_DIRECTUS_ADMIN_EMAIL": ADMIN_EMAIL,
        "MESH_DIRECTUS_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    if url is not None:
        env["MESH_DIRECTUS_URL"] = url
    if token is not None:
        env["MESH_DIRECTUS_TOKEN"] = token
    if saga_token is not None:
        env["MESH_DIRECTUS_WRITE_TOKEN"] = saga_token
    return env


async def start_seed(env: Mapping[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        MESH, "seed", *args, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


async def finish(proc: asyncio.subprocess.Process, timeout: float = 180) -> Run:
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def summary(stdout: str) -> dict[str, tuple[int, int]]:
    """The summary's ``collection  N rows (M new)`` lines: collection -> (N, M)."""
    lines = re.findall(r"^  (\w+) +(\d+) rows \((\d+) new\)$", stdout, re.M)
    return {collection: (int(rows), int(new)) for collection, rows, new in lines}


@dataclass(frozen=True)
class Seeded:
    """A fresh Directus that one ``mesh seed`` (started before it) has seeded."""

    url: str
    token: str = field(repr=False)
    saga_token: str = field(repr=False)
    env: dict[str, str] = field(repr=False)
    first: Run


def bootstrapped_directus(install: Path, database_url: str, state_dir: Path) -> DirectusService:
    """A Directus on a fresh database, on a free port (bootstrap and start it to use it)."""
    return DirectusService(
        DirectusSettings(
            install_dir=install,
            database_url=database_url,
            state_dir=state_dir,
            admin_email=ADMIN_EMAIL,
            admin_password=ADMIN_PASSWORD,
            port=free_port(),
        )
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def seeded_by_command(
    directus_install: Path,
    make_database: Callable[[], str],
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Seeded]:
    service = bootstrapped_directus(
        directus_install, make_database(), tmp_path_factory.mktemp("directus-seed-command")
    )
    await service.bootstrap()
    token, saga_token = generate_service_token(), generate_service_token()
    env = seed_env(service.url, token, saga_token)
    # Started before Directus, like a compose job whose Directus is still starting, and
    # kept waiting long enough to say so.
    proc = await start_seed(env, "--wait", "180")
    try:
        await asyncio.sleep(PROGRESS_EVERY_S + 1)
        await service.start()
        yield Seeded(service.url, token, saga_token, env, await finish(proc))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await service.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def admin(seeded_by_command: Seeded) -> AsyncIterator[DirectusClient]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        yield await DirectusClient.login(http, seeded_by_command.url, ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.mark.directus
@pytest.mark.asyncio(loop_scope="session")
async def test_waits_for_directus_then_seeds_collections_rows_and_user(
    seeded_by_command: Seeded, admin: DirectusClient, sample_domain: DomainConfig
) -> None:
    run = seeded_by_command.first
    assert run.code == 0, run.stderr
    assert re.search(r"waiting for Directus at \S+ \(\d+ of 180 s\): ", run.stdout), run.stdout
    expected = {e.collection: DEFAULT_ROWS[name] for name, e in sample_domain.entities.items()}
    assert await counts(admin, sample_domain) == expected
    # The summary names every collection with its rows, all of them new.
    assert summary(run.stdout) == {c: (rows, rows) for c, rows in expected.items()}
    # The adapters' token is the service user's.
    (user,) = await admin.request(
        "GET", "/users", params={"filter[email][_eq]": SERVICE_EMAIL, "fields": "id"}
    )
    me = DirectusClient(admin.http, seeded_by_command.url, seeded_by_command.token)
    assert await me.request("GET", "/users/me", params={"fields": "id"}) == user
    # MESH_DIRECTUS_WRITE_TOKEN (the source's write_token_env) is the sagas' user's.
    (saga,) = await admin.request(
        "GET", "/users", params={"filter[email][_eq]": SAGA_EMAIL, "fields": "id"}
    )
    me = DirectusClient(admin.http, seeded_by_command.url, seeded_by_command.saga_token)
    assert await me.request("GET", "/users/me", params={"fields": "id"}) == saga
    assert f"saga user {SAGA_EMAIL}, token from MESH_DIRECTUS_WRITE_TOKEN" in run.stdout


@pytest.mark.directus
@pytest.mark.asyncio(loop_scope="session")
async def test_second_run_creates_nothing(
    seeded_by_command: Seeded, admin: DirectusClient, sample_domain: DomainConfig
) -> None:
    before = await counts(admin, sample_domain)
    (last,) = await admin.request("GET", "/activity", params={"sort": "-id", "limit": "1"})

    again = await finish(await start_seed(seeded_by_command.env))

    assert again.code == 0, again.stderr
    assert "up to date" in again.stdout
    assert await counts(admin, sample_domain) == before
    assert summary(again.stdout) == {c: (rows, 0) for c, rows in before.items()}
    # Nothing was written: the only new activity is the seed's own admin login.
    new = await admin.request(
        "GET", "/activity", params={"filter[id][_gt]": str(last["id"]), "fields": "action"}
    )
    assert [row["action"] for row in new] == ["login"]


@pytest.mark.directus
@pytest.mark.asyncio(loop_scope="session")
async def test_prints_neither_token_nor_password(seeded_by_command: Seeded) -> None:
    run = seeded_by_command.first
    for secret in (seeded_by_command.token, seeded_by_command.saga_token, ADMIN_PASSWORD):
        assert secret not in run.stdout + run.stderr


@pytest.mark.directus
@pytest.mark.asyncio(loop_scope="session")
async def test_no_rows_seeds_collections_and_user_only(
    directus_install: Path,
    make_database: Callable[[], str],
    tmp_path: Path,
    sample_domain: DomainConfig,
) -> None:
    service = bootstrapped_directus(directus_install, make_database(), tmp_path)
    await service.bootstrap()
    await service.start()
    try:
        run = await finish(await start_seed(seed_env(service.url, "t" * 16), "--no-rows"))
        assert run.code == 0, run.stderr
        async with aiohttp.ClientSession() as http:
            api = await DirectusClient.login(http, service.url, ADMIN_EMAIL, ADMIN_PASSWORD)
            assert await counts(api, sample_domain) == dict.fromkeys(
                (e.collection for e in sample_domain.entities.values()), 0
            )
            me = DirectusClient(http, service.url, "t" * 16)
            assert await me.request("GET", "/users/me", params={"fields": "id"})
            # Without MESH_DIRECTUS_WRITE_TOKEN there is no user for sagas.
            assert not await api.request(
                "GET", "/users", params={"filter[email][_eq]": SAGA_EMAIL, "fields": "id"}
            )
    finally:
        await service.stop()


@pytest.mark.parametrize(
    ("token", "problem"),
    [(None, "is not set"), ("", "is not set"), ("0123456789abcde", "is too short (15 characters)")],
)
def test_a_missing_or_short_token_is_one_clear_line(token: str | None, problem: str) -> None:
    # No Directus is needed: the token is checked before anything is called.
    run = subprocess.run(
        [MESH, "seed", "--wait", "0"],
        env=seed_env("http://127.0.0.1:9", token),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert run.stdout == ""
    (line,) = run.stderr.splitlines()
    assert line.startswith("mesh: configuration error: environment, key 'MESH_DIRECTUS_TOKEN': ")
    assert problem in line
    if token:
        assert token not in line


def test_directus_not_answering_in_time_is_one_clear_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    run = subprocess.run(
        [MESH, "seed", "--wait", "1"],
        env=seed_env(url, generate_service_token()),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1
    (line,) = run.stderr.splitlines()
    assert line.startswith(f"mesh: error: Directus at {url} is not healthy after 1 s")
