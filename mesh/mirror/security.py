"""Row-level security of the mirror tables: a reader sees its own tenant's rows, nothing else.

Every entity table has row-level security enabled and *forced* (so its owner goes through
the policies too) and two permissive policies:

``dictamesh_owner_write``, ``FOR ALL TO <the table's owner>``, ``USING (true)``
    The writer is the role the mirror connects as, and it owns the tables (it creates
    them and adds columns). A batch holds rows of every tenant and is written in one
    statement per table; each row's tenant was checked against its Kafka key before
    (:func:`~mesh.mirror.rows.event_row`) and a ``CHECK`` keeps ``tenant`` equal to the
    URN's. Forcing matters even so: without this policy the owner reads and writes
    nothing, rather than everything. Any role with the owner's privileges shares it.

``dictamesh_tenant_read``, ``FOR SELECT TO PUBLIC``
    A row is visible when its tenant is the session's ``dictamesh.tenant`` setting *and*
    the current user is a member of that tenant's group role ``dictamesh_tenant_<tenant>``.
    Custom settings can be changed by anyone (``SET dictamesh.tenant = 'other'``), so the
    setting alone would be no boundary: the membership is what a role is granted (by
    ``mesh mirror grant``), the setting only names which of its tenants a session reads
    and lets the planner use the primary key's ``tenant`` prefix. An unset setting, an
    empty one or a tenant without a group role match nothing (``to_regrole`` is NULL;
    the role name is quoted so that no setting can be parsed as anything but a name).

Superusers and roles with ``BYPASSRLS`` bypass all of it (Postgres' rule):
``mesh mirror grant`` refuses to grant to them.

:func:`secure_table` runs at every connect of the writer (in the migrations'
transaction, right after the table is created), so a table created later, or one whose
security was switched off by hand, is covered again before anything is written.
"""

from __future__ import annotations

from typing import Any

from mesh.mirror.tables import TENANT_COLUMN, MirrorTable, quote_ident

__all__ = [
    "READ_POLICY",
    "TENANT_ROLE_PREFIX",
    "TENANT_SETTING",
    "WRITE_POLICY",
    "secure_table",
    "tenant_role",
]

Cursor = Any  # an aiopg cursor (untyped library)

TENANT_SETTING = "dictamesh.tenant"
"""The session setting naming the tenant a reader reads (``ALTER ROLE … SET`` by the grant)."""

TENANT_ROLE_PREFIX = "dictamesh_tenant_"
"""Group roles ``dictamesh_tenant_<tenant>`` (cluster-wide, like every role): membership is
what lets a role read a tenant. They own nothing and are granted nothing."""

READ_POLICY = "dictamesh_tenant_read"
WRITE_POLICY = "dictamesh_owner_write"

_SETTING = f"current_setting('{TENANT_SETTING}', true)"
READ_CONDITION = (
    f"{quote_ident(TENANT_COLUMN)} = {_SETTING} AND pg_has_role(current_user, "
    f"to_regrole(quote_ident('{TENANT_ROLE_PREFIX}' || {_SETTING})), 'MEMBER')"
)
"""The read policy's ``USING``: the session's tenant, and a member of its group role."""


def tenant_role(tenant: str) -> str:
    """The group role whose members may read ``tenant``'s rows."""
    return f"{TENANT_ROLE_PREFIX}{tenant}"


async def secure_table(cur: Cursor, table: MirrorTable) -> list[str]:
    """Enable and force row-level security on ``table`` and create or fix its policies;
    return what changed (nothing when all is in place: then it only reads the catalog).

    Must run as the table's owner (ALTER TABLE and CREATE POLICY need it).
    """
    name = quote_ident(table.name)
    await cur.execute(
        "SELECT c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner),"
        " EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = %s),"
        " (SELECT p.polroles = ARRAY[c.relowner] FROM pg_policy p"
        "   WHERE p.polrelid = c.oid AND p.polname = %s)"
        " FROM pg_class c WHERE c.oid = to_regclass(%s)",
        (READ_POLICY, WRITE_POLICY, name),
    )
    enabled, forced, owner, has_read, write_is_owners = await cur.fetchone()
    changes: list[str] = []
    if not (enabled and forced):
        await cur.execute(f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY")
        changes.append(f"{table.name}: row-level security enabled and forced")
    if write_is_owners is None:
        await cur.execute(
            f"CREATE POLICY {WRITE_POLICY} ON {name} AS PERMISSIVE FOR ALL"
            f" TO {quote_ident(owner)} USING (true) WITH CHECK (true)"
        )
        changes.append(f"{table.name}: policy {WRITE_POLICY} for its owner {owner}")
    elif not write_is_owners:
        # The table changed hands (ALTER TABLE … OWNER TO): the new owner is the writer.
        await cur.execute(f"ALTER POLICY {WRITE_POLICY} ON {name} TO {quote_ident(owner)}")
        changes.append(f"{table.name}: policy {WRITE_POLICY} now for its owner {owner}")
    if not has_read:
        await cur.execute(
            f"CREATE POLICY {READ_POLICY} ON {name} AS PERMISSIVE FOR SELECT TO PUBLIC"
            f" USING ({READ_CONDITION})"
        )
        changes.append(f"{table.name}: policy {READ_POLICY} (rows of the session's tenant)")
    return changes
