"""``mesh mirror grant``: a role that reads one tenant's rows of the mirror, and nothing else.

What a grant does, in one transaction (all of it or nothing), each step skipped when
already done, so running it again changes nothing and says so:

1. refuses a tenant the domain config does not declare, a role that would bypass
   row-level security (a superuser, ``BYPASSRLS``, the tables' owner or a member of it,
   ``CREATEROLE``, which could grant itself any tenant's group role),
   a role that already reads another tenant, and tables without row-level security;
2. creates the role if missing (``NOLOGIN`` unless ``login``; a password is sent as the
   server's SCRAM verifier, never in clear) and the tenant's group role
   ``dictamesh_tenant_<tenant>`` (:mod:`mesh.mirror.security`), and makes the role a
   member of the group: that membership is what the read policy checks;
3. grants ``CONNECT`` on the database, ``USAGE`` on the schema and ``SELECT`` on the
   mirror tables, plus default privileges so the tables the owner creates later (a new
   entity type) are readable too (they get row-level security in the transaction that
   creates them);
4. ``ALTER ROLE … SET dictamesh.tenant = '<tenant>'``, so the role's sessions read its
   tenant without setting anything.

It connects with ``MESH_DATABASE_URL`` (its search_path names the mirror's schema) as a
role allowed to do all that: a superuser, or a role with ``CREATEROLE``, membership in the
tables' owner and ``SET`` on the parameter ``dictamesh.tenant`` (PostgreSQL 15+).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from mesh.domain import load_domain
from mesh.errors import ConfigError
from mesh.mirror.errors import MirrorGrantError
from mesh.mirror.security import READ_POLICY, TENANT_ROLE_PREFIX, TENANT_SETTING, tenant_role
from mesh.mirror.tables import MirrorTable, mirror_tables
from mesh.settings import Settings, redact_url

__all__ = ["grant_tenant", "run_grant"]

Cursor = Any  # a psycopg2 cursor

_WHO_MAY = (
    "run `mesh mirror grant` with MESH_DATABASE_URL connecting as a role that may create "
    "roles and grant on the mirror's tables: a superuser, or a role with CREATEROLE, "
    f"membership in the tables' owner and SET on the parameter {TENANT_SETTING} "
    f"(GRANT SET ON PARAMETER {TENANT_SETTING} TO …)"
)


def run_grant(
    settings: Settings,
    *,
    tenant: str,
    role: str,
    login: bool = False,
    password_env: str | None = None,
    say: Callable[[str], None] = print,
) -> int:
    """The ``mesh mirror grant`` command: check its arguments, grant, print each step."""
    domain = load_domain(settings.domain_config)
    if not domain.has_tenant(tenant):
        raise ConfigError(
            f"tenant '{tenant}' is not declared (declared: {', '.join(domain.tenants)}); "
            "grant one of those, or declare it in the domain config first",
            source=str(settings.domain_config),
            key="tenants",
        )
    if settings.database_url is None:
        raise ConfigError(
            "not set: point it at the mirror's database (and schema), connecting as a role "
            "that may create roles",
            source="environment",
            key="MESH_DATABASE_URL",
        )
    password: str | None = None
    if password_env is not None:
        if not login:
            raise MirrorGrantError("--password-env sets a login password: add --login")
        password = os.environ.get(password_env)
        if not password:
            raise ConfigError(
                f"not set or empty: it should hold the password of role {role}",
                source="environment",
                key=password_env,
            )
    steps = grant_tenant(
        settings.database_url.get_secret_value(),
        mirror_tables(domain),
        tenant=tenant,
        role=role,
        login=login,
        password=password,
        password_from=password_env,
    )
    for step in steps:
        say(step)
    return 0


@dataclass(frozen=True)
class _Table:
    """A mirror table as the catalog has it."""

    name: str
    oid: int
    owner: str
    secured: bool
    """Row-level security enabled and forced, with the read policy."""


def grant_tenant(
    dsn: str,
    tables: Mapping[str, MirrorTable],
    *,
    tenant: str,
    role: str,
    login: bool = False,
    password: str | None = None,
    password_from: str | None = None,
) -> list[str]:
    """Make ``role`` read ``tenant``'s rows of the mirror tables in ``dsn``'s schema; return
    the steps taken, one line each. The tenant must be declared (the caller checks).

    Raises :class:`MirrorGrantError` when it may not or cannot (nothing applied then).
    """
    if role.startswith(TENANT_ROLE_PREFIX):
        raise MirrorGrantError(
            f"role names starting with {TENANT_ROLE_PREFIX} are the tenants' group roles; "
            "grant to another role"
        )
    try:
        conn = psycopg2.connect(dsn, connect_timeout=10)
    except psycopg2.Error as exc:
        raise MirrorGrantError(
            f"cannot connect to Postgres at {redact_url(dsn)}: {_first_line(exc)}"
        ) from exc
    try:
        with conn, conn.cursor() as cur:  # one transaction: committed only if all went well
            return _Grant(cur, conn, role, tenant).run(tables, login, password, password_from)
    except psycopg2.errors.InsufficientPrivilege as exc:
        raise MirrorGrantError(f"Postgres refused: {_first_line(exc)}; {_WHO_MAY}") from exc
    except psycopg2.Error as exc:
        raise MirrorGrantError(
            f"the grant failed in Postgres at {redact_url(dsn)}: {type(exc).__name__}: "
            f"{_first_line(exc)} (nothing was applied)"
        ) from exc
    finally:
        conn.close()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or type(exc).__name__).splitlines()[0]


class _Grant:
    """The steps of one grant on one cursor, each recorded as a line."""

    def __init__(self, cur: Cursor, conn: Any, role: str, tenant: str) -> None:
        self.cur = cur
        self.conn = conn
        self.role = role
        self.tenant = tenant
        self.ident = sql.Identifier(role)
        self.steps: list[str] = []

    def one(self, query: str, *args: Any) -> Any:
        self.cur.execute(query, args)
        row = self.cur.fetchone()
        return None if row is None else row[0]

    def run(
        self,
        tables: Mapping[str, MirrorTable],
        login: bool,
        password: str | None,
        password_from: str | None,
    ) -> list[str]:
        self.cur.execute("SELECT current_schema(), current_database()")
        schema, database = self.cur.fetchone()
        if schema is None:
            raise MirrorGrantError(
                "the search_path of MESH_DATABASE_URL names no existing schema; set it to the "
                "mirror's (e.g. ?options=-csearch_path%3Dmirror)"
            )
        found = self._tables(schema, database, tables)
        owners = sorted({t.owner for t in found})
        self._role(owners, login, password, password_from)
        self._tenant_group()
        self._privileges(schema, database, found, owners)
        self._setting()
        missing = sorted(set(tables) - {t.name for t in found})
        if missing:
            self.steps.append(
                f"not created yet: {', '.join(missing)} (readable when they are, by the "
                "default privileges)"
            )
        self.steps.append(
            f"{self.role} reads tenant {self.tenant} of the mirror in {database}.{schema}, "
            "and no other tenant"
        )
        return self.steps

    def _tables(
        self, schema: str, database: str, tables: Mapping[str, MirrorTable]
    ) -> list[_Table]:
        names = sorted(t.name for t in tables.values())
        self.cur.execute(
            "SELECT c.relname, c.oid, pg_get_userbyid(c.relowner),"
            " c.relrowsecurity AND c.relforcerowsecurity AND EXISTS (SELECT 1 FROM pg_policy p"
            "  WHERE p.polrelid = c.oid AND p.polname = %s)"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.relname = ANY(%s)"
            " ORDER BY c.relname",
            (READ_POLICY, schema, names),
        )
        found = [_Table(*row) for row in self.cur.fetchall()]
        if not found:
            raise MirrorGrantError(
                f"no mirror tables ({', '.join(names)}) in schema {schema} of database "
                f"{database}: start the mirror once (a worker whose MESH_DATABASE_URL connects "
                "as the mirror's writer role) so that its role creates and owns them, then "
                "grant; or set MESH_DATABASE_URL's search_path to the mirror's schema"
            )
        open_tables = [t.name for t in found if not t.secured]
        if open_tables:
            raise MirrorGrantError(
                f"{', '.join(open_tables)} in {database}.{schema} have no row-level security "
                "yet (made by an older DictaMesh): start the mirror once so that its "
                "migrations add it, then grant again (now the role would see every tenant)"
            )
        return found

    def _role(
        self, owners: list[str], login: bool, password: str | None, password_from: str | None
    ) -> None:
        self.cur.execute(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcanlogin FROM pg_roles"
            " WHERE rolname = %s",
            (self.role,),
        )
        found = self.cur.fetchone()
        verifier = (
            psycopg2.extensions.encrypt_password(password, self.role, self.conn)
            if password is not None
            else None
        )
        with_password = f", password from ${password_from}" if verifier is not None else ""
        if found is None:
            query = sql.SQL("CREATE ROLE {} " + ("LOGIN" if login else "NOLOGIN")).format(
                self.ident
            )
            if verifier is not None:
                query += sql.SQL(" PASSWORD {}").format(sql.Literal(verifier))
            self.cur.execute(query)
            self.steps.append(
                f"created role {self.role} ({'LOGIN' if login else 'NOLOGIN'}{with_password})"
            )
            return
        superuser, bypassrls, createrole, can_login = found
        if superuser or bypassrls:
            raise MirrorGrantError(
                f"role {self.role} is a {'superuser' if superuser else 'BYPASSRLS role'}: it "
                "bypasses row-level security and would read every tenant; grant to another role"
            )
        if createrole:
            raise MirrorGrantError(
                f"role {self.role} has CREATEROLE: it could make itself a member of any "
                "tenant's group role and read that tenant; grant to a role without it"
            )
        for owner in owners:
            if self.one("SELECT pg_has_role(%s, %s, 'USAGE')", self.role, owner):
                raise MirrorGrantError(
                    f"role {self.role} has the privileges of {owner}, which owns the mirror "
                    "tables and writes every tenant's rows; grant to a role that is neither "
                    f"{owner} nor a member of it"
                )
        changes = []
        if login and not can_login:
            self.cur.execute(sql.SQL("ALTER ROLE {} LOGIN").format(self.ident))
            changes.append("may log in now")
        if verifier is not None:
            self.cur.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(self.ident, sql.Literal(verifier))
            )
            changes.append(f"password set from ${password_from}")
        self.steps.append(
            f"role {self.role} exists" + (f": {', '.join(changes)}" if changes else "")
        )

    def _tenant_group(self) -> None:
        group = tenant_role(self.tenant)
        if self.one("SELECT 1 FROM pg_roles WHERE rolname = %s", group) is None:
            self.cur.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
            self.steps.append(
                f"created group role {group} (NOLOGIN: its members read {self.tenant})"
            )
        self.cur.execute(
            "SELECT rolname FROM pg_roles WHERE starts_with(rolname, %s) AND rolname <> %s"
            " AND pg_has_role(%s, oid, 'MEMBER') ORDER BY rolname",
            (TENANT_ROLE_PREFIX, group, self.role),
        )
        others = [row[0] for row in self.cur.fetchall()]
        if others:
            listed = ", ".join(o.removeprefix(TENANT_ROLE_PREFIX) for o in others)
            revoke = "; ".join(f'REVOKE "{o}" FROM "{self.role}"' for o in others)
            raise MirrorGrantError(
                f"role {self.role} already reads tenant {listed} (a member of "
                f"{', '.join(others)}); a role reads one tenant: grant to another role, or "
                f"revoke that first ({revoke})"
            )
        if self.one("SELECT pg_has_role(%s, %s, 'MEMBER')", self.role, group):
            self.steps.append(f"{self.role} is already a member of {group}")
        else:
            self.cur.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), self.ident))
            self.steps.append(f"granted {group} to {self.role}")

    def _privileges(
        self, schema: str, database: str, tables: list[_Table], owners: list[str]
    ) -> None:
        role, ident = self.role, self.ident
        if self.one("SELECT has_database_privilege(%s, %s, 'CONNECT')", role, database):
            self.steps.append(f"{role} may already connect to database {database}")
        else:
            self.cur.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(database), ident
                )
            )
            self.steps.append(f"granted CONNECT on database {database} to {role}")
        if self.one("SELECT has_schema_privilege(%s, %s, 'USAGE')", role, schema):
            self.steps.append(f"{role} already has USAGE on schema {schema}")
        else:
            self.cur.execute(
                sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), ident)
            )
            self.steps.append(f"granted USAGE on schema {schema} to {role}")
        grant = [
            t
            for t in tables
            if not self.one("SELECT has_table_privilege(%s, %s, 'SELECT')", role, t.oid)
        ]
        if grant:
            self.cur.execute(
                sql.SQL("GRANT SELECT ON {} TO {}").format(
                    sql.SQL(", ").join(sql.Identifier(schema, t.name) for t in grant), ident
                )
            )
            self.steps.append(f"granted SELECT on {', '.join(t.name for t in grant)} to {role}")
        kept = [t.name for t in tables if t not in grant]
        if kept:
            self.steps.append(f"{role} already has SELECT on {', '.join(kept)}")
        for owner in owners:
            exists = self.one(
                "SELECT EXISTS (SELECT 1 FROM pg_default_acl d, aclexplode(d.defaclacl) a"
                " WHERE d.defaclrole = to_regrole(quote_ident(%s))"
                " AND d.defaclnamespace = to_regnamespace(quote_ident(%s))"
                " AND d.defaclobjtype = 'r' AND a.grantee = to_regrole(quote_ident(%s))"
                " AND a.privilege_type = 'SELECT')",
                owner,
                schema,
                role,
            )
            later = f"SELECT on the tables {owner} creates later in schema {schema}"
            if exists:
                self.steps.append(f"{role} already has {later}")
                continue
            self.cur.execute(
                sql.SQL(
                    "ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}"
                ).format(sql.Identifier(owner), sql.Identifier(schema), ident)
            )
            self.steps.append(f"granted {role} {later} (default privileges)")

    def _setting(self) -> None:
        wanted = f"{TENANT_SETTING}={self.tenant}"
        present = self.one(
            "SELECT EXISTS (SELECT 1 FROM pg_db_role_setting s"
            " WHERE s.setrole = to_regrole(quote_ident(%s)) AND s.setdatabase = 0"
            " AND %s = ANY(s.setconfig))",
            self.role,
            wanted,
        )
        said = f"{TENANT_SETTING} = '{self.tenant}' in every session of {self.role}"
        if present:
            self.steps.append(f"already {said}")
            return
        self.cur.execute(
            sql.SQL("ALTER ROLE {} SET {} = {}").format(
                self.ident, sql.SQL(TENANT_SETTING), sql.Literal(self.tenant)
            )
        )
        self.steps.append(f"set {said} (ALTER ROLE … SET)")
