"""The layer contracts (import-linter, ``pyproject.toml``) hold, and catch a wrong import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` run in ``root`` (which must hold ``pyproject.toml`` and ``mesh/``)."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of the product's sources and the contracts, to break on purpose."""
    root = tmp_path / "checkout"
    root.mkdir()
    shutil.copy(PROJECT_ROOT / "pyproject.toml", root)
    for folder in ("mesh", "agents", "tables", "config", "schemas"):
        shutil.copytree(
            PROJECT_ROOT / folder, root / folder, symlinks=True,
            ignore=shutil.ignore_patterns("__pycache__"),
        )  # fmt: skip
    return root


def test_the_contracts_hold() -> None:
    done = lint_imports(PROJECT_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("mesh/graphql/lists.py", "from mesh.web import entities",
         "GraphQL reads through the catalog, never through the web views"),
        ("mesh/catalog/fold.py", "import faust",
         "Only the runtime seam (mesh.runtime) imports faust"),
        ("mesh/agents/mirror.py", "from aiokafka import AIOKafkaConsumer",
         "Only the runtime seam (mesh.runtime) imports faust"),
        ("mesh/mirror/rows.py", "from mesh.sources import events",
         "Sources, the catalog and the mirror are independent"),
        ("mesh/sources/runner.py", "from mesh_tooling.dev import process",
         "The product never imports its tooling"),
        ("mesh/web/health.py", "import aiohttp",
         "Workers talk to each other only through the fleet router"),
    ],
)  # fmt: skip
def test_a_wrong_import_breaks_a_contract(copy: Path, module: str, line: str, broken: str) -> None:
    target = copy / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    done = lint_imports(copy)
    assert done.returncode != 0, done.stdout
    broken_part = done.stdout.split("Broken contracts", 1)[-1]
    assert broken in " ".join(broken_part.split()), done.stdout
