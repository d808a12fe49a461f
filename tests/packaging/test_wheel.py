"""The product as a user installs it: its wheel, in a fresh virtualenv outside the checkout.

The wheel must carry the whole product (with ``agents/`` and ``tables/`` as ``mesh.agents``
and ``mesh.tables``, the sample domain config and schemas) and nothing of the tooling; from
an empty directory ``mesh check`` passes and ``mesh worker`` joins the test broker and
registry and answers ``/readyz``. The install is the image's own recipe
(``deploy/image/install.sh``, which the Dockerfile runs), so the image recipe is exercised
here although no image is built.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from mesh_tooling.dev.process import free_port

from tests.support.auth import worker_env

PROJECT_ROOT = Path(__file__).resolve().parents[2]
INSTALL_RECIPE = PROJECT_ROOT / "deploy" / "image" / "install.sh"
READY_WITHIN_S = 180


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The product's wheel, built as ``pip wheel .`` builds it, from a copy of the checkout
    without build leftovers (setuptools packs whatever an old ``build/`` still holds)."""
    source = tmp_path_factory.mktemp("source") / "dictamesh"
    shutil.copytree(
        PROJECT_ROOT, source, symlinks=True,
        ignore=shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "node_modules"),
    )  # fmt: skip
    dist = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist),
         str(source)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (found,) = dist.glob("dictamesh-*.whl")
    return found


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv (no system site packages) with the wheel and its dependencies,
    made by the image's own install recipe (``deploy/image/install.sh``)."""
    where = tmp_path_factory.mktemp("venv") / "venv"
    done = subprocess.run(
        ["sh", str(INSTALL_RECIPE), str(wheel.parent), str(where), sys.executable],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return where / "bin"


@pytest.fixture
def empty_dir(tmp_path: Path) -> Path:
    """An empty working directory outside the checkout."""
    where = tmp_path / "work"
    where.mkdir()
    return where


def user_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no MESH_* settings, nothing of this checkout."""
    keep = {k: v for k, v in os.environ.items()
            if not k.startswith("MESH_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}  # fmt: skip
    return {**keep, **extra}


def test_the_wheel_is_the_product_alone(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names if not n.startswith("dictamesh-")}
    assert tops == {"mesh"}  # no top-level agents/tables (PyTables' import name), no tooling
    assert "mesh/agents/catalog.py" in names
    assert "mesh/tables/catalog.py" in names
    assert "mesh/samples/config/domain.yaml" in names
    assert "mesh/samples/schemas/envelope.avsc" in names
    assert "mesh/samples/schemas/after/customer.avsc" in names
    tooling = [n for n in names if n.startswith(("mesh/dev/", "mesh/registry/", "mesh/bench/"))]
    assert tooling == []


def test_mesh_check_from_an_empty_directory(venv: Path, empty_dir: Path) -> None:
    where = subprocess.run(
        [str(venv / "python"), "-c", "import mesh; print(mesh.__file__)"],
        cwd=empty_dir, env=user_env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.startswith(str(venv.parent)), where.stdout  # not the checkout's mesh
    done = subprocess.run(
        [str(venv / "mesh"), "check"], cwd=empty_dir, env=user_env(),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    shipped = venv.parent / "lib" / "python3.11" / "site-packages" / "mesh" / "samples"
    assert f"{shipped}/config/domain.yaml: ok (5 entity types)" in done.stdout


def test_mesh_init_writes_a_domain_to_edit(venv: Path, empty_dir: Path) -> None:
    done = subprocess.run(
        [str(venv / "mesh"), "init", "mine"], cwd=empty_dir, env=user_env(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = empty_dir / "mine" / "config" / "domain.yaml"
    assert (empty_dir / "mine" / "schemas" / "after" / "invoice.avsc").is_file()
    env = user_env(
        MESH_DOMAIN_CONFIG=str(config), MESH_SCHEMAS_DIR=str(config.parent.parent / "schemas")
    )
    checked = subprocess.run(
        [str(venv / "mesh"), "check"], cwd=empty_dir, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert f"{config}: ok" in checked.stdout
    again = subprocess.run(
        [str(venv / "mesh"), "init", "mine"], cwd=empty_dir, env=user_env(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert again.returncode == 2
    assert "exist already; nothing was written" in again.stderr
    shipped = subprocess.run(
        [str(venv / "mesh"), "schemas", "--write"], cwd=empty_dir, env=user_env(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert shipped.returncode == 2  # never writes into the installed package
    assert "copy it out with `mesh init DIR`" in shipped.stderr
    mine = subprocess.run(
        [str(venv / "mesh"), "schemas", "--write"], cwd=empty_dir, env=env,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert mine.returncode == 0, mine.stderr
    assert "schemas already match the domain config" in mine.stdout


def test_tooling_commands_say_how_to_get_them(venv: Path, empty_dir: Path) -> None:
    done = subprocess.run(
        [str(venv / "mesh"), "dev"], cwd=empty_dir, env=user_env(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "pip install dictamesh-tooling" in done.stderr


@pytest.fixture
def worker(
    venv: Path, empty_dir: Path, broker: str, registry_url: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``mesh worker`` of the installed wheel, started in the empty directory."""
    port = free_port()
    env = user_env(
        MESH_BROKER_URL=f"kafka://{broker}",
        MESH_SCHEMA_REGISTRY_URL=registry_url,
        MESH_APP_ID=f"wheel-{uuid.uuid4().hex[:8]}",
        MESH_WEB_PORT=str(port),
        MESH_TOPIC_PARTITIONS="2",
        MESH_DIRECTUS_URL="http://127.0.0.1:9",  # no Directus: the source backs off
        MESH_DIRECTUS_TOKEN="x" * 32,
        **worker_env(),
    )
    log = (empty_dir.parent / "worker.log").open("wb")
    proc = subprocess.Popen(
        [str(venv / "mesh"), "worker"], cwd=empty_dir, env=env, stdout=log, stderr=log
    )
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def test_mesh_worker_from_an_empty_directory_becomes_ready(
    worker: tuple[str, subprocess.Popen[bytes]], empty_dir: Path
) -> None:
    url, proc = worker
    deadline = time.monotonic() + READY_WITHIN_S
    status = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            status = requests.get(f"{url}/readyz", timeout=2).status_code
        except requests.RequestException:
            status = None
        if status == 200:
            break
        time.sleep(1)
    log = (empty_dir.parent / "worker.log").read_text(errors="replace")
    assert status == 200, f"/readyz never answered 200 (exit {proc.poll()}):\n{log[-3000:]}"
    assert (empty_dir / ".state" / "workers").is_dir()  # state where it was started
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, log[-3000:]
