"""``deploy/`` validated offline: Kustomize renders every overlay, the built-in kinds pass
``kubernetes-validate --strict``, the Strimzi resources pass the vendored CRD schemas,
checkov finds nothing (or each skip says why), and what the manifests tell a worker is
something the worker understands (settings, probe paths, mounts)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.app import create_app
from mesh.settings import Settings
from tests.deploy.settings_env import RUNTIME_VARIABLES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
STRIMZI = Path(__file__).parent / "strimzi"
KUBERNETES_VERSION = "1.32.0"
OVERLAYS = ("overlays/dev", "overlays/prod")
Doc = dict[str, Any]


def kustomize(path: Path) -> list[Doc]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with Kustomize) is needed to render deploy/"
    done = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    return {name: kustomize(DEPLOY / name) for name in (*OVERLAYS, "kafka")}


def write_docs(folder: Path, docs: list[Doc]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, doc in enumerate(docs):
        path = folder / f"{n:03d}-{doc['kind'].lower()}.yaml"
        path.write_text(yaml.safe_dump(doc))
        paths.append(path)
    return paths


def one(docs: list[Doc], kind: str, name_prefix: str = "") -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name_prefix)]
    assert len(found) == 1, f"{kind} {name_prefix}: {len(found)} found"
    return found[0]


def worker(docs: list[Doc]) -> Doc:
    statefulset = one(docs, "StatefulSet", "dictamesh-worker")
    containers = statefulset["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["worker"]
    return dict(containers[0])


def environment(docs: list[Doc]) -> dict[str, Any]:
    """Every variable the worker container gets: ``env`` entries and envFrom ConfigMaps."""
    container = worker(docs)
    variables: dict[str, Any] = {
        e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]
    }
    for source in container.get("envFrom", []):
        config_map = one(docs, "ConfigMap", source["configMapRef"]["name"])
        variables.update(config_map["data"])
    return variables


# --- validators ---------------------------------------------------------------------------


def kubernetes_validate(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", KUBERNETES_VERSION,
         *map(str, paths)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_built_in_kinds_pass_strict_validation(
    rendered: dict[str, list[Doc]], overlay: str, tmp_path: Path
) -> None:
    docs = rendered[overlay]
    assert {"StatefulSet", "Service", "PodDisruptionBudget", "NetworkPolicy"} <= {
        d["kind"] for d in docs
    }
    done = kubernetes_validate(write_docs(tmp_path, docs))
    assert done.returncode == 0, done.stdout + done.stderr


def test_strict_validation_rejects_an_unknown_field(
    rendered: dict[str, list[Doc]], tmp_path: Path
) -> None:
    statefulset = one(rendered["overlays/prod"], "StatefulSet")
    broken = json.loads(json.dumps(statefulset))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    done = kubernetes_validate(write_docs(tmp_path, [broken]))
    assert done.returncode != 0
    assert "livenesProbe" in done.stdout + done.stderr


def check_jsonschema(schema: Path, paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "check-jsonschema"), "--schemafile", str(schema), *map(str, paths)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_strimzi_resources_pass_the_crd_schemas(
    rendered: dict[str, list[Doc]], tmp_path: Path
) -> None:
    docs = rendered["kafka"]
    for kind, schema in (("KafkaTopic", "kafkatopic"), ("KafkaUser", "kafkauser")):
        of_kind = [d for d in docs if d["kind"] == kind]
        assert of_kind, kind
        paths = write_docs(tmp_path / kind, of_kind)
        done = check_jsonschema(STRIMZI / f"{schema}.schema.json", paths)
        assert done.returncode == 0, done.stdout + done.stderr
    broken = json.loads(json.dumps(one(docs, "KafkaTopic", "dictamesh.dead-letters")))
    broken["spec"]["partitions"] = "12"
    done = check_jsonschema(
        STRIMZI / "kafkatopic.schema.json", write_docs(tmp_path / "broken", [broken])
    )
    assert done.returncode != 0


def checkov(folder: Path) -> dict[str, Any]:
    assert CHECKOV.exists(), f"{CHECKOV} is missing: run `make install`"
    env = {**os.environ, "LOG_LEVEL": "ERROR"}
    done = subprocess.run(
        [str(CHECKOV), "--framework", "kubernetes", "--directory", str(folder),
         "--compact", "--skip-download", "--output", "json"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    report = json.loads(done.stdout)
    return report if isinstance(report, dict) else report[0]


def test_checkov_finds_nothing_and_every_skip_says_why(
    rendered: dict[str, list[Doc]], tmp_path: Path
) -> None:
    for name, docs in rendered.items():
        write_docs(tmp_path / name.replace("/", "-"), docs)
    report = checkov(tmp_path)
    assert report["summary"]["parsing_errors"] == 0
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == []
    assert report["summary"]["passed"] > 50
    for skipped in report["results"]["skipped_checks"]:
        reason = skipped["check_result"].get("suppress_comment") or ""
        assert len(reason) > 20, skipped["check_id"]


def test_checkov_catches_a_privileged_worker(
    rendered: dict[str, list[Doc]], tmp_path: Path
) -> None:
    statefulset = json.loads(json.dumps(one(rendered["overlays/prod"], "StatefulSet")))
    statefulset["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {
        "privileged": True
    }
    write_docs(tmp_path, [statefulset])
    failed = {c["check_id"] for c in checkov(tmp_path)["results"]["failed_checks"]}
    assert "CKV_K8S_16" in failed  # privileged containers


# --- what the manifests tell the worker ------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_is_a_setting(rendered: dict[str, list[Doc]], overlay: str) -> None:
    unknown = sorted(set(environment(rendered[overlay])) - RUNTIME_VARIABLES)
    assert unknown == []


def test_probe_paths_are_served_by_the_worker(
    rendered: dict[str, list[Doc]], tmp_path: Path
) -> None:
    context = create_app(Settings(state_dir=tmp_path))
    routes = set(context.app.web.views)
    container = worker(rendered["overlays/prod"])
    probes = [container[p]["httpGet"] for p in ("startupProbe", "livenessProbe", "readinessProbe")]
    assert {probe["path"] for probe in probes} == {"/healthz", "/readyz"}
    for probe in probes:
        assert probe["path"] in routes
        assert probe["port"] == "http"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == int(environment(rendered["overlays/prod"])["MESH_WEB_PORT"])


def test_each_worker_has_a_stable_identity_and_keeps_its_volume(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["overlays/prod"]
    statefulset = one(docs, "StatefulSet")
    env = environment(docs)
    pod_name = {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["MESH_WORKER_NAME"] == pod_name
    assert env["MESH_GROUP_INSTANCE_ID"] == pod_name
    peers = one(docs, "Service", statefulset["spec"]["serviceName"])
    assert peers["spec"]["clusterIP"] == "None"
    assert peers["spec"]["publishNotReadyAddresses"] is True
    assert env["MESH_WEB_HOST"] == f"$(MESH_WORKER_NAME).{peers['metadata']['name']}"
    assert env["MESH_WEB_BIND"] == "0.0.0.0"
    # A restart shorter than the session timeout moves no partition.
    assert float(env["MESH_SESSION_TIMEOUT_S"]) >= 60
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in worker(docs)["volumeMounts"]}
    assert mounts[env["MESH_STATE_DIR"]] in claims
    assert statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30


def test_the_domain_and_every_schema_are_mounted_where_the_settings_say(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["overlays/prod"]
    env = environment(docs)
    pod = one(docs, "StatefulSet")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in worker(docs)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config = Path(env["MESH_DOMAIN_CONFIG"])
    domain_map = one(docs, "ConfigMap", volumes["domain"]["configMap"]["name"])
    assert mounts["domain"] == str(config.parent)
    assert domain_map["data"][config.name] == (ROOT / "config" / "domain.yaml").read_text()
    assert mounts["schemas"] == env["MESH_SCHEMAS_DIR"]
    projected: dict[str, str] = {}
    for source in volumes["schemas"]["projected"]["sources"]:
        data = one(docs, "ConfigMap", source["configMap"]["name"])["data"]
        items = source["configMap"].get("items") or [{"key": k, "path": k} for k in data]
        projected.update({item["path"]: data[item["key"]] for item in items})
    on_disk = {
        str(path.relative_to(ROOT / "schemas")): path.read_text()
        for path in (ROOT / "schemas").rglob("*.avsc")
    }
    assert projected == on_disk


def test_prod_uses_managed_topics_and_authenticated_kafka(
    rendered: dict[str, list[Doc]],
) -> None:
    docs = rendered["overlays/prod"]
    env = environment(docs)
    assert env["MESH_TOPIC_DECLARE"] == "false"
    assert env["MESH_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["MESH_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    for secret in ("MESH_KAFKA_SASL_PASSWORD", "MESH_SCHEMA_REGISTRY_PASSWORD",
                   "MESH_DATABASE_URL", "MESH_REDIS_URL", "MESH_DIRECTUS_TOKEN"):  # fmt: skip
        assert "secretKeyRef" in env[secret], secret
    mounts = {m["mountPath"] for m in worker(docs)["volumeMounts"]}
    assert str(Path(env["MESH_KAFKA_SSL_CAFILE"]).parent) in mounts
    user = one(rendered["kafka"], "KafkaUser")
    assert user["metadata"]["name"] == env["MESH_KAFKA_SASL_USERNAME"]
    assert user["spec"]["authentication"]["type"] == "scram-sha-512"
    for overlay in OVERLAYS:
        assert not [d for d in rendered[overlay] if d["kind"] == "Secret"]


def test_the_kafka_resources_are_what_mesh_topics_generates(tmp_path: Path) -> None:
    """deploy/kafka/topics.yaml is regenerated, not edited: it matches the command."""
    env = {**os.environ, "MESH_TOPIC_PARTITIONS": "12", "MESH_STATE_DIR": str(tmp_path)}
    env.pop("MESH_APP_ID", None)
    out = tmp_path / "topics.yaml"
    done = subprocess.run(
        [str(BIN / "mesh"), "topics", "--cluster", "dictamesh", "-o", str(out)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.read_text() == (DEPLOY / "kafka" / "topics.yaml").read_text()


def test_the_argo_cd_applications_point_at_what_exists() -> None:
    apps = list(yaml.safe_load_all((DEPLOY / "argocd" / "dictamesh.yaml").read_text()))
    assert {a["kind"] for a in apps} == {"Application"}
    paths = {a["spec"]["source"]["path"] for a in apps}
    assert paths == {"deploy/overlays/prod", "deploy/kafka"}
    for path in paths:
        assert (ROOT / path / "kustomization.yaml").exists()
