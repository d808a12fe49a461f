"""The tests' token issuer (the dev stack's kind, its keys in a directory of this test
process), the fleet secret, and the header a test client sends to the workers."""

from __future__ import annotations

import functools
import secrets
import tempfile
from pathlib import Path

from mesh_tooling.dev.issuer import DevIssuer

TENANT = "default"
"""The sample domain's tenant."""

FLEET_SECRET = secrets.token_urlsafe(32)
"""The test process's fleet secret: its workers sign their peer calls with it."""


@functools.cache
def issuer() -> DevIssuer:
    """One issuer for the whole test process."""
    return DevIssuer.in_dir(Path(tempfile.mkdtemp(prefix="dictamesh-test-issuer-")))


SCOPES = ("pii:read",)
"""What the tests' default token may read: every field of the sample domain."""


@functools.cache
def bearer(tenant: str = TENANT, scopes: tuple[str, ...] = SCOPES) -> dict[str, str]:
    """An ``Authorization`` header valid for the whole test run (every field readable
    unless ``scopes`` says otherwise)."""
    token = issuer().mint(tenant, scopes=scopes, subject="tests", ttl_s=24 * 3600)
    return {"Authorization": f"Bearer {token}"}


def worker_env() -> dict[str, str]:
    """The settings a test worker (or ``mesh relations check``) needs: the test issuer's
    key and the fleet secret."""
    return {**issuer().worker_env(), "MESH_FLEET_SECRET": FLEET_SECRET}
