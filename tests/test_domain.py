"""The domain config: the shipped file is valid; bad files give one clear message."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.domain import expand_env, load_domain, parse_domain, tenant_of
from mesh.errors import ConfigError
from mesh.settings import Settings

SHIPPED = Settings().domain_config


@pytest.fixture
def raw() -> dict[str, Any]:
    data = expand_env(yaml.safe_load(SHIPPED.read_text()), source="domain.yaml")
    assert isinstance(data, dict)
    return data


def test_the_shipped_config_declares_the_sample_domain() -> None:
    domain = load_domain(SHIPPED)
    assert sorted(domain.entities) == [
        "customer",
        "invoice",
        "invoice_item",
        "product",
        "reservation",
    ]
    assert domain.topic("customer") == "customers.directus.entity_changed"
    assert domain.urn("default", "invoice", "7") == "urn:dictamesh:default:invoice:7"
    assert domain.entities["invoice"].fields["customer"].references == "customer"
    assert domain.entities["customer"].reverse_relations["invoices"].entity == "invoice"
    assert domain.entities["invoice"].reverse_relations["items"].field == "invoice"
    names = {e.graphql_name for e in domain.entities.values()}
    assert names == {"Customer", "Product", "Invoice", "InvoiceItem", "Reservation"}
    # What sagas write with: their own token, and unique keys a retried write collides on.
    assert [(s.token_env, s.write_token_env) for s in domain.sources] == [
        ("MESH_DIRECTUS_TOKEN", "MESH_DIRECTUS_WRITE_TOKEN"),
        ("MESH_DIRECTUS_BETA_TOKEN", "MESH_DIRECTUS_BETA_WRITE_TOKEN"),
    ]
    unique = {
        f"{name}.{field}"
        for name, entity in domain.entities.items()
        for field, spec in entity.fields.items()
        if spec.unique
    }
    assert unique == {"invoice.saga_key", "invoice_item.saga_key", "reservation.saga_line"}
    assert domain.entities["product"].reverse_relations["reservations"].entity == "reservation"


def _broken(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(raw)
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "key", "message"),
    [
        ("entities.invoice.fields.customer.references", "client", "references", "unknown entity"),
        ("entities.customer.sources", ["nowhere"], "entities.customer.sources.0", "unknown source"),
        (
            "entities.customer.sources",
            ["directus", "directus"],
            "entities.customer.sources.1",
            "both feed tenant 'default'",
        ),
        ("sources.1.tenant", "gamma", "sources.1.tenant", "unknown tenant 'gamma'"),
        ("tenants", ["default", "default"], "tenants", "must be unique"),
        ("tenants", ["Bad Tenant"], "tenants.0", "should match pattern"),
        ("entities.customer.key", "uuid", "entities.customer.key", "not in fields"),
        ("entities.product.fields.price.scale", KeyError, "price", "precision' and 'scale"),
        ("entities.product.fields.price.type", "money", "price.type", "Input should be"),
        ("entities.customer.colour", "blue", "entities.customer.colour", "unknown key"),
        ("entities.customer.graphql_name", "Product", "graphql_name", "already used"),
        (
            "entities.customer.reverse_relations.invoices.field",
            "status",
            "invoices.field",
            "must be",
        ),
        ("tenants", KeyError, "tenants", "required key is missing"),
        ("entities.customer.fields.id.unique", True, "fields.id.unique", "the key is unique"),
        ("entities.product.fields.price.unique", True, "price", "decimal field cannot be unique"),
        (
            "sources.0.write_token_env",
            "MESH_DIRECTUS_TOKEN",
            "sources.0",
            "'write_token_env' must name another variable",
        ),
    ],
)
def test_bad_config_names_the_key_and_the_problem(
    raw: dict[str, Any], path: str, value: Any, key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_domain(_broken(raw, path, value), source="domain.yaml")
    text = str(info.value)
    assert text.startswith("domain.yaml, key '")
    assert key in text
    assert message in text


def test_tenants_keep_colliding_ids_apart() -> None:
    domain = load_domain(SHIPPED)
    assert domain.tenants == ["default", "beta"]
    assert [(s.name, s.tenant) for s in domain.entity_sources("customer")] == [
        ("directus", "default"),
        ("directus_beta", "beta"),
    ]
    # Both tenants' customers share the topic; their keys (URNs) never meet.
    first, second = domain.urn("default", "customer", "1"), domain.urn("beta", "customer", "1")
    assert first != second
    assert (tenant_of(first), tenant_of(second)) == ("default", "beta")
    assert not domain.source("directus_beta").enabled  # unless MESH_DIRECTUS_BETA_ENABLED


def test_a_version_1_file_reads_as_one_tenant(raw: dict[str, Any]) -> None:
    old = copy.deepcopy(raw)
    old.update(version=1, tenant="acme")
    del old["tenants"]
    old["sources"] = [{k: v for k, v in old["sources"][0].items() if k != "tenant"}]
    for entity in old["entities"].values():
        entity["source"] = entity.pop("sources")[0]
    domain = parse_domain(old)
    assert domain.tenants == ["acme"]
    assert domain.sources[0].tenant == "acme"
    assert domain.entities["invoice"].sources == ["directus"]


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "domain.yaml"
    path.write_text("version: 1\nentities: [unclosed\n")
    with pytest.raises(ConfigError, match=r"domain\.yaml: .* at line 3"):
        load_domain(path)


def test_cli_reports_bad_config_without_a_traceback(tmp_path: Path, raw: dict[str, Any]) -> None:
    path = tmp_path / "domain.yaml"
    path.write_text(yaml.safe_dump(_broken(raw, "entities.customer.key", "uuid")))
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "check"],
        env={"MESH_DOMAIN_CONFIG": str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"mesh: configuration error: {path}, key 'entities.customer.key': "
        "key field 'uuid' is not in fields"
    )


def test_cli_reports_bad_settings_without_echoing_secrets() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "config"],
        env={"MESH_WEB_PORT": "eighty", "MESH_REDIS_URL": "redis://:hunter2@x", "PATH": "/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "key 'MESH_WEB_PORT'" in result.stderr
    assert "Traceback" not in result.stderr

    shown = subprocess.run(
        [sys.executable, "-m", "mesh", "config"],
        env={"MESH_REDIS_URL": "redis://:hunter2@x", "PATH": "/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "redis_url = **********" in shown.stdout
    assert "hunter2" not in shown.stdout + shown.stderr


def test_env_references_are_expanded_in_values_not_comments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = SHIPPED.read_text()
    assert "${MESH_DIRECTUS_URL:-http://127.0.0.1:8055}" in text
    path = tmp_path / "domain.yaml"
    path.write_text("# ${NOT_SET_ANYWHERE} in a comment is left alone\n" + text)
    monkeypatch.delenv("MESH_DIRECTUS_URL", raising=False)
    assert load_domain(path).sources[0].url == "http://127.0.0.1:8055"
    monkeypatch.setenv("MESH_DIRECTUS_URL", "http://directus.internal:8055")
    assert load_domain(path).sources[0].url == "http://directus.internal:8055"


def test_an_unset_env_reference_without_default_is_named(
    tmp_path: Path, raw: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DIRECTUS_PROD_URL", raising=False)
    path = tmp_path / "domain.yaml"
    path.write_text(yaml.safe_dump(_broken(raw, "sources.0.url", "${DIRECTUS_PROD_URL}")))
    with pytest.raises(ConfigError, match=r"\$\{DIRECTUS_PROD_URL\} is used but the variable"):
        load_domain(path)


def test_a_source_needs_credentials(raw: dict[str, Any]) -> None:
    data = _broken(raw, "sources.0.token_env", KeyError)
    with pytest.raises(ConfigError, match="set 'token_env', or both 'email_env'"):
        parse_domain(data, source="domain.yaml")


def test_every_shipped_reference_is_indexed() -> None:
    assert load_domain(SHIPPED).unindexed_references() == []


def test_check_warns_about_a_reference_without_a_reverse_relation(
    tmp_path: Path, raw: dict[str, Any]
) -> None:
    path = tmp_path / "domain.yaml"
    broken = _broken(raw, "entities.product.reverse_relations.invoice_items", KeyError)
    path.write_text(yaml.safe_dump(broken, sort_keys=False))  # field order is the schema's
    assert load_domain(path).unindexed_references() == ["invoice_item.product"]
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "check"],
        env={"MESH_DOMAIN_CONFIG": str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    warning = result.stdout.strip().splitlines()[-1]
    assert warning.startswith("warning: invoice_item.product references product but product")
    assert "reverse_relations: {<name>: {entity: invoice_item, field: product}}" in warning
