"""The subject of a request, as its verified token (or ``MESH_AUTH=off``) describes it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: the token's subject, its tenant and its scopes."""

    subject: str
    tenant: str
    scopes: frozenset[str]
    expires_at: float
    """Unix time after which the token that made it is no longer valid."""
    every_scope: bool = False
    """Authentication is off (``MESH_AUTH=off``): nothing is withheld."""

    def has_scope(self, scope: str) -> bool:
        return self.every_scope or scope in self.scopes

    def has_scopes(self, scopes: Iterable[str]) -> bool:
        """True when the principal has every one of ``scopes`` (a field's policy)."""
        return self.every_scope or all(scope in self.scopes for scope in scopes)


def unauthenticated(tenant: str) -> Principal:
    """Who every request is with ``MESH_AUTH=off``: ``tenant``, every scope, no expiry."""
    return Principal("anonymous", tenant, frozenset(), float("inf"), every_scope=True)
