"""Who may do what in the dev stack's Directus: a role, its permissions and a service user
with a static token for each of

- the adapters (:func:`ensure_service_user`): read-only, the domain collections and the
  system collections the change feed is read from;
- the sagas (:func:`ensure_saga_user`): read what they check, create and update what they
  write, the products' ``stock`` only, and delete nothing.

Idempotent, and careful to write nothing when all is in place. A role holds exactly the
permissions wanted here: one it should not have (say, a write someone granted the
adapter role by hand) is removed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mesh.errors import StackError
from mesh_tooling.dev.directus.client import DirectusClient

__all__ = [
    "SAGA_ACCESS",
    "SAGA_EMAIL",
    "SAGA_ROLE",
    "SERVICE_EMAIL",
    "SERVICE_ROLE",
    "SYSTEM_READ_COLLECTIONS",
    "ensure_saga_user",
    "ensure_service_user",
]

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

SAGA_ROLE = "DictaMesh saga"
SAGA_EMAIL = "mesh-saga@example.com"
"""The sagas' service user."""

_ALL = ("*",)
SAGA_ACCESS: Mapping[str, Mapping[str, Sequence[str]]] = {
    "customers": {"read": _ALL},
    # Stock is reserved and released; the rest of a product is people's to edit.
    "products": {"read": _ALL, "update": ("stock",)},
    "reservations": {"read": _ALL, "create": _ALL, "update": _ALL},
    # A compensated order cancels its invoice (an update), it never deletes it.
    "invoices": {"read": _ALL, "create": _ALL, "update": _ALL},
    "invoice_items": {"read": _ALL, "create": _ALL, "update": _ALL},
}
"""The saga role's permissions: collection → action → the fields it may touch. No
``delete`` anywhere; collections the seeded domain lacks are left out."""

Permission = dict[str, Any]


def _wanted_permissions(role_id: str, collections: Sequence[str]) -> list[Permission]:
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


def _saga_permissions(role_id: str, collections: Sequence[str]) -> list[Permission]:
    return [
        {
            "role": role_id,
            "collection": collection,
            "action": action,
            "fields": list(fields),
            "permissions": {},
        }
        for collection, actions in SAGA_ACCESS.items()
        if collection in collections
        for action, fields in actions.items()
    ]


async def _token_works(api: DirectusClient, token: str, user_id: str) -> bool:
    probe = DirectusClient(api.http, api.base_url, token)
    try:
        me = await probe.request("GET", "/users/me", params={"fields": "id"})
    except StackError:
        return False
    return isinstance(me, dict) and me.get("id") == user_id


async def _ensure_role(
    api: DirectusClient,
    name: str,
    description: str,
    icon: str,
    announce: str,
    progress: Callable[[str], None],
) -> tuple[str, bool]:
    """The id of the role named ``name``, created without admin or app (UI) access when
    missing; and whether it was created."""
    roles = await api.request("GET", "/roles", params={"filter[name][_eq]": name, "fields": "id"})
    if roles:
        return str(roles[0]["id"]), False
    progress(announce)
    # Directus 10 grants access per role: no admin, no app (UI) access, API only.
    role = await api.request(
        "POST",
        "/roles",
        {
            "name": name,
            "icon": icon,
            "description": description,
            "admin_access": False,
            "app_access": False,
        },
    )
    return str(role["id"]), True


async def _ensure_permissions(
    api: DirectusClient, role_id: str, wanted: Sequence[Permission]
) -> bool:
    """Make the role's permissions exactly ``wanted``; True when something was written."""
    changed = False
    have: dict[tuple[str, str], Permission] = {
        (p["collection"], p["action"]): p
        for p in await api.request(
            "GET",
            "/permissions",
            params={
                "filter[role][_eq]": role_id,
                "fields": "id,collection,action,fields,permissions",
                "limit": "-1",
            },
        )
    }
    missing = []
    for perm in wanted:
        current = have.pop((perm["collection"], perm["action"]), None)
        if current is None:
            missing.append(perm)
            continue
        # e.g. an entity type was added to the config: widen the activity filter.
        patch = {
            key: perm[key]
            for key in ("fields", "permissions")
            if (current[key] or ({} if key == "permissions" else [])) != perm[key]
        }
        if patch:
            await api.request("PATCH", f"/permissions/{current['id']}", patch)
            changed = True
    if missing:
        await api.request("POST", "/permissions", missing)
        changed = True
    if have:
        await api.request("DELETE", "/permissions", [p["id"] for p in have.values()])
        changed = True
    return changed


async def _ensure_user(
    api: DirectusClient,
    role_id: str,
    email: str,
    last_name: str,
    token: str,
    progress: Callable[[str], None],
) -> bool:
    """The user ``email`` in the role, with ``token`` as its static token; True when
    something was written."""
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
                "last_name": last_name,
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
        return True
    return False


async def ensure_service_user(
    api: DirectusClient,
    collections: Sequence[str],
    email: str,
    token: str,
    progress: Callable[[str], None],
) -> bool:
    """The adapters' read-only role and user; True when something was written."""
    role_id, changed = await _ensure_role(
        api,
        SERVICE_ROLE,
        "Read-only API access for the DictaMesh adapters",
        "sync_alt",
        f"creating Directus role {SERVICE_ROLE!r} and user {email}",
        progress,
    )
    changed |= await _ensure_permissions(api, role_id, _wanted_permissions(role_id, collections))
    changed |= await _ensure_user(api, role_id, email, "adapter", token, progress)
    return changed


async def ensure_saga_user(
    api: DirectusClient,
    collections: Sequence[str],
    email: str,
    token: str,
    progress: Callable[[str], None],
) -> bool:
    """The sagas' role (:data:`SAGA_ACCESS` on those of ``collections`` it names) and user;
    True when something was written."""
    role_id, changed = await _ensure_role(
        api,
        SAGA_ROLE,
        "What DictaMesh sagas write: reservations, invoices, product stock; never deletes",
        "account_tree",
        f"creating Directus role {SAGA_ROLE!r} and user {email}",
        progress,
    )
    changed |= await _ensure_permissions(api, role_id, _saga_permissions(role_id, collections))
    changed |= await _ensure_user(api, role_id, email, "saga", token, progress)
    return changed
