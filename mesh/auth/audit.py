"""One audit line per authenticated request: who, in which tenant, did what, with what
outcome and how long it took. Never the variables' values or the body."""

from __future__ import annotations

import logging

from mesh.auth.principal import Principal

audit_log = logging.getLogger("dictamesh.audit")

OPERATION = "dictamesh.operation"
"""The request key a view stores the operation under (a GraphQL operation's name)."""


def audit(
    principal: Principal | None,
    method: str,
    path: str,
    operation: str | None,
    status: int,
    seconds: float,
) -> None:
    """Log the audit line of one request (``principal`` None: refused before one was known)."""
    audit_log.info(
        "subject=%s tenant=%s method=%s path=%s operation=%s status=%d duration_ms=%.1f",
        principal.subject if principal else "-",
        principal.tenant if principal else "-",
        method,
        path,
        operation or "-",
        status,
        seconds * 1000,
    )
