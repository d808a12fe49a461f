"""What the PostgreSQL database of a Directus holds: is it bootstrapped, is there an admin."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from mesh.errors import StackError

__all__ = ["database_state"]


async def database_state(url: str) -> tuple[bool, str | None, bool]:
    """(system tables installed, id of an admin role, an active admin user exists) of the
    Directus database at ``url``.

    Also fails fast with a clear message: Directus itself retries for 25 s, then prints
    a stack trace, when the database is down or missing.
    """
    # Both import psycopg2 (installed with aiopg): imported here so importing this is cheap.
    import psycopg2

    from mesh.settings import redact_url

    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.path.strip("/"):
        raise StackError(
            f"Directus database URL {redact_url(url)!r} is not a PostgreSQL URL; "
            "use postgresql://user[:password]@host:port/dbname."
        )

    def query() -> tuple[bool, str | None, bool]:
        conn = psycopg2.connect(url, connect_timeout=5)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass('directus_users') IS NOT NULL")
                row = cur.fetchone()
                if not (row and row[0]):
                    return False, None, False
                cur.execute(
                    "SELECT id FROM directus_roles WHERE admin_access ORDER BY name LIMIT 1"
                )
                role = cur.fetchone()
                cur.execute(
                    "SELECT EXISTS (SELECT 1 FROM directus_users u JOIN directus_roles r"
                    " ON r.id = u.role WHERE r.admin_access AND u.status = 'active')"
                )
                admin = cur.fetchone()
                return True, str(role[0]) if role else None, bool(admin and admin[0])
        finally:
            conn.close()

    try:
        return await asyncio.to_thread(query)
    except psycopg2.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StackError(
            f"Directus cannot use its database {redact_url(url)}: {reason}. "
            "Start PostgreSQL and create the database (e.g. `createdb "
            f"{parts.path.strip('/')}`), or fix the database URL."
        ) from None
