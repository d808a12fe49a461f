"""The adapters' access to Directus: a read-only role, its permissions and a service user
with a static token. Idempotent, and careful to write nothing when all is in place."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from mesh.errors import StackError
from mesh_tooling.dev.directus.client import DirectusClient

__all__ = ["SERVICE_EMAIL", "SERVICE_ROLE", "SYSTEM_READ_COLLECTIONS", "ensure_service_user"]

SERVICE_ROLE = "DictaMesh adapter"
SERVICE_EMAIL = "mesh-adapter@example.com"
"""The adapters' service user (example.com: Directus rejects reserved TLDs like .local)."""

SYSTEM_READ_COLLECTIONS = (
    "directus_activity",  # the change feed the adapters poll
    "directus_revisions",  # the item data behind each activity row
    "directus_collections",  # schema, so an adapter can check the config against Directus
    "directus_fields",
    "directus_relations",
)
"""System collections the service role may read besides the domain collections."""


def _wanted_permissions(role_id: str, collections: Sequence[str]) -> list[dict[str, Any]]:
    """Read access on the domain collections and the system collections the adapters use;
    activity and revisions only for the domain collections (not logins, users, settings)."""
    wanted = [
        {"role": role_id, "collection": c, "action": "read", "fields": ["*"], "permissions": {}}
        for c in (*collections, *SYSTEM_READ_COLLECTIONS)
    ]
    for perm in wanted:
        if perm["collection"] in ("directus_activity", "directus_revisions"):
            perm["permissions"] = {"collection": {"_in": list(collections)}}
    return wanted


async def _token_works(api: DirectusClient, token: str, user_id: str) -> bool:
    probe = DirectusClient(api.http, api.base_url, token)
    try:
        me = await probe.request("GET", "/users/me", params={"fields": "id"})
    except StackError:
        return False
    return isinstance(me, dict) and me.get("id") == user_id


async def ensure_service_user(
    api: DirectusClient,
    collections: Sequence[str],
    email: str,
    token: str,
    progress: Callable[[str], None],
) -> bool:
    changed = False
    roles = await api.request(
        "GET", "/roles", params={"filter[name][_eq]": SERVICE_ROLE, "fields": "id"}
    )
    if roles:
        role_id = str(roles[0]["id"])
    else:
        progress(f"creating Directus role {SERVICE_ROLE!r} and user {email}")
        # Directus 10 grants access per role: no admin, no app (UI) access, API reads only.
        role = await api.request(
            "POST",
            "/roles",
            {
                "name": SERVICE_ROLE,
                "icon": "sync_alt",
                "description": "Read-only API access for the DictaMesh adapters",
                "admin_access": False,
                "app_access": False,
            },
        )
        role_id = str(role["id"])
        changed = True
    have = {
        (p["collection"], p["action"]): p
        for p in await api.request(
            "GET",
            "/permissions",
            params={
                "filter[role][_eq]": role_id,
                "fields": "id,collection,action,permissions",
                "limit": "-1",
            },
        )
    }
    missing = []
    for perm in _wanted_permissions(role_id, collections):
        current = have.get((perm["collection"], perm["action"]))
        if current is None:
            missing.append(perm)
        elif (current["permissions"] or {}) != perm["permissions"]:
            # e.g. an entity type was added to the config: widen the activity filter.
            await api.request(
                "PATCH", f"/permissions/{current['id']}", {"permissions": perm["permissions"]}
            )
            changed = True
    if missing:
        await api.request("POST", "/permissions", missing)
        changed = True
    users = await api.request(
        "GET", "/users", params={"filter[email][_eq]": email, "fields": "id,role"}
    )
    if not users:
        await api.request(
            "POST",
            "/users",
            {
                "email": email,
                "first_name": "DictaMesh",
                "last_name": "adapter",
                "role": role_id,
                "token": token,
                "status": "active",
            },
        )
        return True
    user = users[0]
    # Directus never returns a static token (only "**********"), so try it instead; set it
    # only when it does not work (e.g. the stack's state dir was reset), because every
    # PATCH of a user adds an activity row and a revision.
    if user["role"] != role_id or not await _token_works(api, token, str(user["id"])):
        progress(f"setting the static token of {email}")
        await api.request("PATCH", f"/users/{user['id']}", {"token": token, "role": role_id})
        changed = True
    return changed
