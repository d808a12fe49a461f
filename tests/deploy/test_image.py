"""The image recipe (``deploy/image/Dockerfile``), checked where no Docker daemon runs.

The Dockerfile is parsed into stages and instructions; the install step it runs is the
wheel-install test's (``deploy/image/install.sh``), which is where the recipe is exercised.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = PROJECT_ROOT / "deploy" / "image" / "Dockerfile"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (continuations joined)."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest, re.IGNORECASE)
            assert match, line
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], match.group(1))
            stages.append(Stage(match.group(2) or str(len(stages)), base))
        elif not stages and keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    _, found = parse(DOCKERFILE.read_text())
    return {s.name: s for s in found}


def test_the_stages_build_run_and_tool(stages: dict[str, Stage]) -> None:
    assert list(stages) == ["build", "runtime", "tooling"]
    assert stages["tooling"].base == "runtime"


def test_bases_are_pinned_never_latest(stages: dict[str, Stage]) -> None:
    for stage in stages.values():
        if stage.base in stages:
            continue
        assert "latest" not in stage.base
        _, _, tag = stage.base.partition(":")
        # An exact version (x.y.z) or a digest; "3.11" or "slim" alone would float.
        assert "@sha256:" in stage.base or re.match(r"\d+\.\d+\.\d+", tag), stage.base


def test_the_worker_runs_as_a_numeric_non_root_user(stages: dict[str, Stage]) -> None:
    runtime = stages["runtime"]
    users = runtime.all("USER")
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")
    assert all(part.isdigit() and int(part) > 0 for part in user), users[-1]
    for name in ("runtime", "tooling"):
        assert stages[name].all("USER")[-1] == users[-1]  # both end as the same non-root user


def test_the_entrypoint_is_mesh_worker_in_exec_form(stages: dict[str, Stage]) -> None:
    (entrypoint,) = stages["runtime"].all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["mesh", "worker"]
    assert stages["runtime"].all("CMD") == []


def test_state_and_temp_live_on_volumes(stages: dict[str, Stage]) -> None:
    runtime = stages["runtime"]
    env = " ".join(runtime.all("ENV"))
    assert "MESH_STATE_DIR=/var/lib/dictamesh" in env
    assert "TMPDIR=/tmp" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # nothing written next to the code
    assert "MESH_WEB_BIND=0.0.0.0" in env
    assert json.loads(runtime.all("VOLUME")[0]) == ["/var/lib/dictamesh"]


def test_the_runtime_has_no_tooling(stages: dict[str, Stage]) -> None:
    text = " ".join(arg for _, arg in stages["runtime"].instructions)
    assert "tooling" not in text
    assert "pip install" not in text  # only the venv built in the build stage is copied
    copies = stages["runtime"].all("COPY")
    assert copies == ["--from=build /opt/dictamesh /opt/dictamesh"]


def test_the_install_is_the_tested_recipe(stages: dict[str, Stage]) -> None:
    build = stages["build"]
    assert "deploy/image/install.sh /usr/local/bin/dictamesh-install" in build.all("COPY")
    assert "dictamesh-install /dist /opt/dictamesh" in build.all("RUN")
    wheel_test = (PROJECT_ROOT / "tests" / "packaging" / "test_wheel.py").read_text()
    assert 'INSTALL_RECIPE = PROJECT_ROOT / "deploy" / "image" / "install.sh"' in wheel_test


def test_every_copied_source_exists(stages: dict[str, Stage]) -> None:
    for stage in stages.values():
        for arg in stage.all("COPY"):
            if arg.startswith("--from="):
                continue
            *sources, _ = arg.split()
            for source in sources:
                assert (PROJECT_ROOT / source).exists(), source


def test_every_mesh_variable_is_a_setting(stages: dict[str, Stage]) -> None:
    from mesh.settings import Settings

    names = {f"MESH_{name.upper()}" for name in Settings.model_fields}
    for stage in stages.values():
        for arg in stage.all("ENV"):
            for pair in arg.split():
                key = pair.partition("=")[0]
                if key.startswith("MESH_"):
                    assert key in names, f"{key} is not a setting"
