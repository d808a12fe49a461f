"""Tenants in Postgres: the mirror writes as a role of its own, not a superuser, and a role
``mesh mirror grant`` made for a tenant reads that tenant's rows and nothing else.

Superusers and roles with BYPASSRLS skip row-level security, so every check here connects
as (or ``SET ROLE``s to) an ordinary role: the writer owns its database and tables, the
readers own nothing. Roles are cluster-wide: every name carries this run's suffix,
tenant names included (their group roles are ``dictamesh_tenant_<tenant>``), and all of
them are dropped at the end.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg2
import pytest
import yaml
from psycopg2 import sql

from mesh.cli import main
from mesh.mirror import MirrorWriter, mirror_tables
from mesh.mirror.rows import Origin, SchemaInfo, event_row
from mesh.mirror.security import tenant_role
from tests.mirror.events import event
from tests.mirror.support import (
    Scenario,
    catch_up,
    domain_data,
    own_topics,
    read_rows,
    with_search_path,
)


@dataclass(frozen=True)
class Cluster:
    """This module's roles and database on the test Postgres server."""

    server: str
    """The superuser's URL (to the ``postgres`` database)."""
    database: str
    writer: str
    reader: str
    beta_reader: str
    nobody: str
    tenants: tuple[str, str]

    def url(self, role: str) -> str:
        """This module's database, connecting as ``role``."""
        parts = urlsplit(self.server)
        netloc = f"{quote(role)}@{parts.hostname}:{parts.port or 5432}"
        return urlunsplit(parts._replace(netloc=netloc, path=f"/{self.database}"))

    @property
    def admin(self) -> str:
        """This module's database as the superuser, who may create roles."""
        parts = urlsplit(self.server)
        return urlunsplit(parts._replace(path=f"/{self.database}"))


def _run(url: str, *statements: sql.Composable | str) -> None:
    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def cluster(postgres_url: str) -> Iterator[Cluster]:
    """A LOGIN role that is no superuser and owns a database of its own, and the names of
    the other roles; everything is dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    made = Cluster(
        server=postgres_url,
        database=f"dictamesh_rls_{suffix}",
        writer=f"dictamesh_writer_{suffix}",
        reader=f"dictamesh_reader_{suffix}",
        beta_reader=f"dictamesh_beta_reader_{suffix}",
        nobody=f"dictamesh_nobody_{suffix}",
        tenants=(f"default_{suffix}", f"beta_{suffix}"),
    )
    ident = sql.Identifier
    try:
        _run(
            postgres_url,
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB").format(
                ident(made.writer)
            ),
            sql.SQL("CREATE ROLE {} LOGIN").format(ident(made.nobody)),
            sql.SQL("CREATE DATABASE {} OWNER {}").format(ident(made.database), ident(made.writer)),
        )
        yield made
    finally:
        roles = [made.reader, made.beta_reader, made.nobody, made.writer]
        roles += [tenant_role(t) for t in made.tenants]
        _run(
            postgres_url,
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(made.database)),
            *(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(role)) for role in roles),
        )


def _query(
    url: str, query: str, *, before: Sequence[str | sql.Composable] = (), args: Any = ()
) -> list[tuple[Any, ...]]:
    """Rows of ``query`` in a fresh session of ``url``, after the ``before`` statements."""
    conn = psycopg2.connect(url)
    try:
        with conn, conn.cursor() as cur:
            for statement in before:
                cur.execute(statement)
            cur.execute(query, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def _set_tenant(tenant: str) -> sql.Composable:
    return sql.SQL("SET dictamesh.tenant = {}").format(sql.Literal(tenant))


def _mesh(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    *argv: str,
) -> tuple[int, list[str], str]:
    """``mesh …`` in this process: exit code, stdout lines, stderr."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def _tenants_data(cluster: Cluster) -> dict[str, Any]:
    data = domain_data()
    data["tenants"] = list(cluster.tenants)
    for source, tenant in zip(data["sources"], cluster.tenants, strict=True):
        source["tenant"] = tenant
    return data


async def test_a_tenant_role_reads_its_tenant_only_and_the_writer_writes_every_tenant(
    cluster: Cluster,
    broker: str,
    registry_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    default, beta = cluster.tenants
    data = _tenants_data(cluster)
    scenario = Scenario(broker, registry_url, cluster.url(cluster.writer), tmp_path, data)
    scenario.dsn = cluster.url(cluster.writer)  # the public schema: readers need no search_path
    domain = scenario.domain
    config = tmp_path / "domain.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))  # `data` has the test's topics

    # The writer, a plain role owning its database, mirrors both tenants' customers 1-3.
    await scenario.create_topics()
    events = [event(domain, "customer", i, i, name=f"{default} {i}") for i in range(1, 6)]
    events += [
        event(domain, "customer", i, 10 + i, tenant=beta, name=f"{beta} {i}") for i in (1, 2, 3)
    ]
    events += [event(domain, "product", 1, 1), event(domain, "product", 1, 2, tenant=beta)]
    await scenario.produce(events)
    mirror = scenario.mirror()
    await mirror.start()
    try:
        await catch_up(mirror)
    finally:
        await mirror.stop()

    writer_url = cluster.url(cluster.writer)
    assert _query(
        writer_url,
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    ) == [(False, False)]
    written = read_rows(writer_url, "customer", by_tenant=True)
    assert sorted(written) == [(beta, 1), (beta, 2), (beta, 3)] + [
        (default, i) for i in range(1, 6)
    ]
    assert {key: row["name"] for key, row in written.items()} == {
        (tenant, i): f"{tenant} {i}" for tenant, i in written
    }
    # Every entity table: row-level security enabled and forced, owned by the writer.
    secured = _query(
        writer_url,
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner)"
        " FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%s)"
        " ORDER BY 1",
        args=(sorted(domain.entities),),
    )
    assert secured == [(name, True, True, cluster.writer) for name in sorted(domain.entities)]

    # The superuser grants tenant `default` to a new LOGIN role.
    env = {
        "MESH_DATABASE_URL": cluster.admin,
        "MESH_DOMAIN_CONFIG": str(config),
        "READER_PASSWORD": "not-checked-by-trust-auth",
    }
    grant = ["mirror", "grant", "--tenant", default, "--role", cluster.reader]
    login = ["--login", "--password-env", "READER_PASSWORD"]
    code, said, err = _mesh(monkeypatch, capsys, env, *grant, *login)
    assert (code, err) == (0, "")
    group = tenant_role(default)
    assert said[:2] == [
        f"created role {cluster.reader} (LOGIN, password from $READER_PASSWORD)",
        f"created group role {group} (NOLOGIN: its members read {default})",
    ]
    assert f"granted {group} to {cluster.reader}" in said
    sample = "customer, invoice, invoice_item, product, reservation"
    assert f"granted SELECT on {sample} to {cluster.reader}" in said
    assert f"set dictamesh.tenant = '{default}' in every session of {cluster.reader}" in " ".join(
        said
    )
    # Again: nothing left to do, and it says so.
    code, again, err = _mesh(monkeypatch, capsys, env, *grant, *login)
    assert (code, err) == (0, "")
    assert not [line for line in again if line.startswith(("created", "granted", "set "))]

    # The reader: exactly default's customers, colliding ids included, by a plain SELECT.
    reader_url = cluster.url(cluster.reader)
    mine = [(default, i, f"{default} {i}") for i in range(1, 6)]
    assert _query(reader_url, "SELECT tenant, id, name FROM customer ORDER BY id") == mine
    assert _query(reader_url, "SELECT count(*) FROM customer") == [(5,)]
    assert _query(reader_url, "SELECT tenant, id FROM product") == [(default, 1)]
    # Custom settings are anyone's to change: naming another tenant shows nothing.
    for other in (beta, "nobody-has-this-tenant", "", 'x"; DROP TABLE customer; --'):
        found = _query(reader_url, "SELECT count(*) FROM customer", before=[_set_tenant(other)])
        assert found == [(0,)], other
    assert _query(
        reader_url, "SELECT count(*) FROM customer WHERE tenant = %s", args=(beta,),
        before=[_set_tenant(beta)],
    ) == [(0,)]  # fmt: skip
    assert _query(
        reader_url, "SELECT count(*) FROM customer", before=["RESET dictamesh.tenant"]
    ) == [(5,)]  # back to the role's own setting
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        _query(reader_url, "UPDATE customer SET name = 'x' RETURNING id")

    # A role granted nothing reads nothing; granted SELECT by hand but no tenant, no rows.
    nobody_url = cluster.url(cluster.nobody)
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        _query(nobody_url, "SELECT count(*) FROM customer")
    _run(
        cluster.admin,
        sql.SQL("GRANT SELECT ON customer TO {}").format(sql.Identifier(cluster.nobody)),
    )
    for tenant in cluster.tenants:
        found = _query(nobody_url, "SELECT count(*) FROM customer", before=[_set_tenant(tenant)])
        assert found == [(0,)]

    # beta's role (NOLOGIN, used through SET ROLE) sees beta's rows, not default's.
    code, said, err = _mesh(
        monkeypatch, capsys, env, "mirror", "grant", "--tenant", beta, "--role", cluster.beta_reader
    )
    assert (code, err) == (0, "")
    assert said[0] == f"created role {cluster.beta_reader} (NOLOGIN)"
    as_beta = [sql.SQL("SET ROLE {}").format(sql.Identifier(cluster.beta_reader))]
    assert _query(
        cluster.admin, "SELECT tenant, id FROM customer ORDER BY id",
        before=[*as_beta, _set_tenant(beta)],
    ) == [(beta, 1), (beta, 2), (beta, 3)]  # fmt: skip
    assert _query(
        cluster.admin, "SELECT count(*) FROM customer", before=[*as_beta, _set_tenant(default)]
    ) == [(0,)]

    # A table the writer creates later (a new entity type) is readable, by its tenant only.
    data["entities"]["note"] = {
        "graphql_name": "Note",
        "sources": [s["name"] for s in data["sources"]],
        "collection": f"notes_{scenario.suffix}",
        "key": "id",
        "fields": {"id": {"type": "integer"}, "text": {"type": "string"}},
    }
    later = scenario.domain_with(data)
    tables = mirror_tables(later)
    writer = MirrorWriter(writer_url, tables)
    notes = [event(later, "note", 1, 1, tenant=t, text=f"note of {t}") for t in cluster.tenants]
    rows = [
        event_row(
            later,
            tables["note"],
            ev,
            SchemaInfo(1, None, None),
            Origin("t", 0, n, later.urn(ev["tenant"], "note", "1").encode(), None),
        )
        for n, ev in enumerate(notes)
    ]
    try:
        assert await writer.write(rows) == []
    finally:
        await writer.close()
    assert _query(reader_url, "SELECT tenant, text FROM note") == [(default, f"note of {default}")]


async def test_grant_refuses_what_would_leak_or_is_unknown(
    cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    default, beta = cluster.tenants
    data = _tenants_data(cluster)
    config = tmp_path / "domain.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    domain = own_topics(data, "grants")
    writer = MirrorWriter(cluster.url(cluster.writer), mirror_tables(domain))
    await writer.connect()  # the writer's tables (if the other test did not make them)
    await writer.close()
    env = {"MESH_DATABASE_URL": cluster.admin, "MESH_DOMAIN_CONFIG": str(config)}

    def grant(tenant: str, role: str, url: str = cluster.admin) -> tuple[int, str]:
        code, _, err = _mesh(
            monkeypatch, capsys, env | {"MESH_DATABASE_URL": url},
            "mirror", "grant", "--tenant", tenant, "--role", role,
        )  # fmt: skip
        return code, err

    code, err = grant("gamma", cluster.reader)
    assert code == 2
    assert f"key 'tenants': tenant 'gamma' is not declared (declared: {default}, {beta})" in err
    _run(cluster.admin, "CREATE SCHEMA IF NOT EXISTS empty")
    code, err = grant(default, cluster.reader, with_search_path(cluster.admin, "empty"))
    assert code == 1
    sample = "customer, invoice, invoice_item, product, reservation"
    assert f"no mirror tables ({sample}) in schema empty" in err
    code, err = grant(default, cluster.writer)
    assert code == 1
    assert f"has the privileges of {cluster.writer}, which owns the mirror tables" in err
    code, err = grant(default, "postgres")
    assert code == 1
    assert "role postgres is a superuser: it bypasses row-level security" in err
    nobody = sql.Identifier(cluster.nobody)
    _run(cluster.server, sql.SQL("ALTER ROLE {} CREATEROLE").format(nobody))
    try:
        code, err = grant(default, cluster.nobody)
    finally:
        _run(cluster.server, sql.SQL("ALTER ROLE {} NOCREATEROLE").format(nobody))
    assert code == 1
    assert f"role {cluster.nobody} has CREATEROLE: it could make itself a member" in err
    assert grant(default, cluster.reader) == (0, "")
    code, err = grant(beta, cluster.reader)
    assert code == 1
    assert f"role {cluster.reader} already reads tenant {default}" in err
    member_of_beta = _query(
        cluster.admin,
        "SELECT pg_has_role(%s, oid, 'MEMBER') FROM pg_roles WHERE rolname = %s",
        args=(cluster.reader, tenant_role(beta)),
    )
    assert member_of_beta in ([], [(False,)])  # nothing of a refused grant is applied
