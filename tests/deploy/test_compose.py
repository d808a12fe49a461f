"""``docker-compose.yml``, checked where no Docker daemon (and no compose plugin) runs.

The compose-spec JSON Schema checks its structure; the rest is what the schema cannot
know: that ``depends_on`` names services that exist and are healthy or one-shot as the
condition needs, that every variable set on a DictaMesh container is a real setting of
that image, that images are pinned, and that each worker has an identity and state of its
own.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.settings_env import RUNTIME_VARIABLES, TOOLING_VARIABLES
from tests.deploy.test_image import DOCKERFILE, parse

PROJECT_ROOT = Path(__file__).resolve().parents[2]
COMPOSE = PROJECT_ROOT / "docker-compose.yml"
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")
ALLOWED = {"runtime": RUNTIME_VARIABLES, "tooling": TOOLING_VARIABLES}
"""The variables each target of our Dockerfile reads."""
TWO_PART_VERSIONS = {"postgres"}
"""Images whose releases are numbered major.minor (Postgres since 10): exact as they are."""
DEFAULT = re.compile(r"^\$\{(\w+):-([^}]*)\}$")
"""``${VAR:-default}``."""

Service = dict[str, Any]


# --- reading the file ------------------------------------------------------------------


def load(path: Path = COMPOSE) -> dict[str, Any]:
    """The compose file with its anchors and merge keys resolved."""
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document


def environment(service: Service) -> dict[str, str]:
    """A service's environment, from the mapping or the ``KEY=value`` list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def depends_on(service: Service) -> dict[str, str]:
    """A service's dependencies and their conditions (the list form means "started")."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def target(service: Service) -> str | None:
    """The stage of our Dockerfile a service is built from (None: not built from it)."""
    build = service.get("build")
    if not isinstance(build, Mapping):
        return None
    if (PROJECT_ROOT / build.get("context", ".") / build["dockerfile"]).resolve() != DOCKERFILE:
        return None
    return str(build.get("target", ""))


def runtime_env() -> dict[str, str]:
    """The ``ENV`` of the Dockerfile's runtime stage."""
    _, stages = parse(DOCKERFILE.read_text())
    (runtime,) = (stage for stage in stages if stage.name == "runtime")
    return dict(
        item.partition("=")[::2] for line in runtime.all("ENV") for item in shlex.split(line)
    )


def check_jsonschema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", path],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def services() -> dict[str, Service]:
    found = load()["services"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def workers(services: dict[str, Service]) -> dict[str, Service]:
    return {name: s for name, s in services.items() if name.startswith("worker-")}


# --- the tests ---------------------------------------------------------------------------


def test_the_compose_spec_schema_accepts_it() -> None:
    assert CHECK_JSONSCHEMA.exists(), "check-jsonschema is not installed (make install)"
    done = check_jsonschema(COMPOSE)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("breakage", "named"),
    [
        (
            lambda doc: doc["services"]["seed"]["depends_on"]["directus"].update(
                condition="service_ready"
            ),
            "service_ready",
        ),
        (lambda doc: doc["services"]["worker-0"].update(volume="typo"), "volume"),
    ],
    ids=["unknown condition", "unknown service key"],
)
def test_the_compose_spec_check_catches_a_broken_file(
    tmp_path: Path, breakage: Any, named: str
) -> None:
    document = load()
    breakage(document)
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(document))
    done = check_jsonschema(broken)
    assert done.returncode != 0
    assert named in done.stdout + done.stderr


def test_the_helpers_read_the_list_forms_too() -> None:
    service = {"environment": ["MESH_A=1", "MESH_B"], "depends_on": ["kafka"]}
    assert environment(service) == {"MESH_A": "1", "MESH_B": ""}
    assert depends_on(service) == {"kafka": "service_started"}


def test_every_dependency_is_a_service_ready_as_its_condition_needs(
    services: dict[str, Service],
) -> None:
    for name, service in services.items():
        for dep, condition in depends_on(service).items():
            assert dep in services, f"{name} depends on undefined service {dep!r}"
            assert dep != name
            if condition == "service_healthy":
                test = services[dep].get("healthcheck", {}).get("test")
                assert test, f"{name} waits for {dep}, which has no healthcheck"
                assert test != ["NONE"], f"{name} waits for {dep}, whose healthcheck is off"
            elif condition == "service_completed_successfully":
                # A one-shot: a restart policy would keep it from ever completing.
                assert services[dep].get("restart", "no") == "no", f"{dep} is not a one-shot"
            else:
                assert condition == "service_started", f"{name} → {dep}: {condition}"


def test_every_variable_on_a_dictamesh_container_is_a_real_setting(
    services: dict[str, Service],
) -> None:
    built = {name: target(s) for name, s in services.items() if target(s) is not None}
    assert set(built.values()) == {"runtime", "tooling"}
    for name, stage in built.items():
        assert stage in ALLOWED, f"{name} builds target {stage!r}"
        unknown = set(environment(services[name])) - ALLOWED[stage]
        assert not unknown, f"{name} ({stage}) sets variables nothing reads: {sorted(unknown)}"


def test_the_seed_is_the_tooling_image_and_the_workers_the_runtime(
    services: dict[str, Service], workers: dict[str, Service]
) -> None:
    _, stages = parse(DOCKERFILE.read_text())
    stage_names = {stage.name for stage in stages}
    assert {"tooling", "runtime"} <= stage_names
    assert target(services["seed"]) == "tooling"
    assert services["seed"]["command"][0] == "seed"  # after the tooling ENTRYPOINT ["mesh"]
    assert len(workers) >= 2
    for name, worker in workers.items():
        assert target(worker) == "runtime", name
        assert "command" not in worker, f"{name} must run the image's `mesh worker`"
        assert depends_on(worker)["seed"] == "service_completed_successfully", name


def test_the_workers_use_the_token_the_seed_gives_the_service_user(
    services: dict[str, Service], workers: dict[str, Service]
) -> None:
    # The adapters' token and the sagas' (their own role): what the seed creates is what
    # every worker uses, and they differ.
    for variable in ("MESH_DIRECTUS_TOKEN", "MESH_DIRECTUS_WRITE_TOKEN"):
        seeded = environment(services["seed"])[variable]
        match = DEFAULT.match(seeded)
        assert match, f"{variable} should come from a variable with a dev default: {seeded!r}"
        assert len(match.group(2)) >= 16  # what `mesh seed` accepts
        for name, worker in workers.items():
            assert environment(worker)[variable] == seeded, (name, variable)
    seed = environment(services["seed"])
    assert seed["MESH_DIRECTUS_TOKEN"] != seed["MESH_DIRECTUS_WRITE_TOKEN"]


def test_every_image_is_pinned_to_an_exact_version(services: dict[str, Service]) -> None:
    for name, service in services.items():
        image = service.get("image")
        if image is None:
            assert target(service) is not None, f"{name} has neither an image nor our build"
            continue
        assert "latest" not in image, name
        repository, _, tag = image.partition("@")[0].rpartition(":")
        parts = 2 if repository in TWO_PART_VERSIONS else 3
        assert re.fullmatch(r"\d+" + r"\.\d+" * (parts - 1), tag), f"{name}: {image} may float"


def test_each_worker_has_its_own_state_volume_and_identity(
    workers: dict[str, Service],
) -> None:
    volumes = load().get("volumes") or {}
    volume_names, identities, ports = [], [], []
    for name, worker in workers.items():
        env = environment(worker)
        state_dir = env.get("MESH_STATE_DIR", runtime_env()["MESH_STATE_DIR"])
        (state,) = [v for v in worker.get("volumes", []) if v.endswith(f":{state_dir}")]
        volume = state.split(":")[0]
        assert volume in volumes, f"{name}: {volume} is not a named volume"
        volume_names.append(volume)
        identities += [env["MESH_WORKER_NAME"], env["MESH_GROUP_INSTANCE_ID"]]
        assert env["MESH_WORKER_NAME"] == env["MESH_GROUP_INSTANCE_ID"] == name
        # Other workers reach it by its service name.
        assert env["MESH_WEB_HOST"] == name
        ports += worker.get("ports", [])
        assert worker.get("read_only") is True, name
        assert "/tmp" in worker.get("tmpfs", []), name
    assert len(set(volume_names)) == len(workers)
    assert len(set(identities)) == len(workers)
    assert len(set(ports)) == len(ports) == len(workers)


def test_the_workers_are_healthy_when_ready(workers: dict[str, Service]) -> None:
    for name, worker in workers.items():
        test = " ".join(worker["healthcheck"]["test"])
        # The runtime image has no curl: Python's urllib asks /readyz.
        assert test.startswith("CMD python -c "), name
        assert "/readyz" in test, name


def test_the_workers_verify_tokens_of_the_token_job_s_issuer(
    services: dict[str, Service], workers: dict[str, Service]
) -> None:
    """The token job (tooling) makes the dev issuer's keys in its volume; every worker
    mounts that volume read-only and reads the public key from it."""
    token = services["token"]
    assert target(token) == "tooling"
    assert token["command"][0] == "token"
    (written,) = [v for v in token["volumes"] if v.startswith("issuer:")]
    assert written.split(":")[1] == "/var/lib/dictamesh"  # the tooling's MESH_STATE_DIR
    for name, worker in workers.items():
        assert depends_on(worker)["token"] == "service_completed_successfully", name
        (mounted,) = [v for v in worker["volumes"] if v.startswith("issuer:")]
        _, where, mode = mounted.split(":")
        assert mode == "ro", name
        key = environment(worker)["MESH_AUTH_PUBLIC_KEY_FILE"]
        # DevIssuer.in_dir(<state>/issuer) writes issuer-public.pem
        assert key == f"{where}/issuer/issuer-public.pem", name
        assert environment(worker)["MESH_AUTH_ISSUER"] == "dictamesh-dev", name
