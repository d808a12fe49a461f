"""Calls between the workers of a fleet, signed with the fleet's shared secret.

Every request to a peer endpoint (``/api/v1/internal/*``) carries ``X-Mesh-Signature:
t=<unix time>,n=<nonce>,v1=<hex>``: an HMAC-SHA256 with ``MESH_FLEET_SECRET`` over the
time, the nonce, the method, the path with its query, a digest of the body and the caller's
subject, tenant and scopes (``X-Mesh-Subject``, ``X-Mesh-Tenant``, ``X-Mesh-Scopes``), so none
of them can be changed in flight. A signature older (or newer) than :data:`WINDOW_S` is
refused, and so is a nonce already seen within it: a captured request cannot be replayed.
A request without a valid signature gets 403, whatever else it sends.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from mesh.auth.principal import Principal
from mesh.errors import MeshError

PEER_PREFIX = "/api/v1/internal/"
"""The peer endpoints: calls between the workers of a fleet, never a client's."""

SIGNATURE_HEADER = "X-Mesh-Signature"
SUBJECT_HEADER = "X-Mesh-Subject"
TENANT_HEADER = "X-Mesh-Tenant"
SCOPES_HEADER = "X-Mesh-Scopes"
CALLER_HEADERS = (SUBJECT_HEADER, TENANT_HEADER, SCOPES_HEADER)

WINDOW_S = 30.0
"""How far a signature's time may be from the receiver's clock."""

FLEET_SUBJECT = "fleet"
"""The subject of a call a worker makes on its own behalf (counts, relation checks)."""


class PeerAuthError(MeshError):
    """A peer call's signature is missing, wrong, stale or replayed: HTTP 403."""


def _message(
    timestamp: str, nonce: str, method: str, path: str, body: bytes, who: Mapping[str, str]
) -> bytes:
    digest = hashlib.sha256(body).hexdigest()
    caller = [who.get(name, "") for name in CALLER_HEADERS]
    return "\n".join([timestamp, nonce, method.upper(), path, digest, *caller]).encode()


class PeerSigner:
    """Signs and checks peer calls with one fleet secret."""

    def __init__(self, secret: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < 32:
            raise ValueError("the fleet secret must be at least 32 bytes")
        self._secret = secret
        self.clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def headers(
        self, method: str, path: str, body: bytes, principal: Principal | None = None
    ) -> dict[str, str]:
        """The headers that sign ``method path`` with ``body`` for ``principal`` (the
        fleet itself when none)."""
        who = {SUBJECT_HEADER: FLEET_SUBJECT}
        if principal is not None:
            who = {
                SUBJECT_HEADER: principal.subject,
                TENANT_HEADER: principal.tenant,
                SCOPES_HEADER: " ".join(sorted(principal.scopes)),
            }
        timestamp, nonce = str(int(self.clock())), secrets.token_hex(12)
        mac = hmac.new(self._secret, _message(timestamp, nonce, method, path, body, who), "sha256")
        return {**who, SIGNATURE_HEADER: f"t={timestamp},n={nonce},v1={mac.hexdigest()}"}

    def check(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> None:
        """Raise :class:`PeerAuthError` unless ``headers`` sign this request, freshly."""
        parts = dict(
            p.split("=", 1) for p in headers.get(SIGNATURE_HEADER, "").split(",") if "=" in p
        )
        timestamp, nonce, given = parts.get("t", ""), parts.get("n", ""), parts.get("v1", "")
        if not (timestamp.isdigit() and nonce and given):
            raise PeerAuthError("no fleet signature")
        now = self.clock()
        if abs(now - int(timestamp)) > WINDOW_S:
            raise PeerAuthError(f"a fleet signature from {now - int(timestamp):.0f} s ago")
        who = {
            k: headers[k] for k in (SUBJECT_HEADER, TENANT_HEADER, SCOPES_HEADER) if k in headers
        }
        expected = hmac.new(
            self._secret, _message(timestamp, nonce, method, path, body, who), "sha256"
        ).hexdigest()
        if not hmac.compare_digest(expected, given):
            raise PeerAuthError("a fleet signature that does not match the request")
        self._remember(nonce, now)

    def _remember(self, nonce: str, now: float) -> None:
        while self._seen and next(iter(self._seen.values())) < now - 2 * WINDOW_S:
            self._seen.popitem(last=False)
        if nonce in self._seen:
            raise PeerAuthError("a fleet signature seen before (a replay)")
        self._seen[nonce] = now


def fleet_principal(tenant: str) -> Principal:
    """The fleet acting on its own behalf for ``tenant`` (e.g. a source's child lookup)."""
    return Principal(FLEET_SUBJECT, tenant, frozenset(), float("inf"), every_scope=True)


def caller(headers: Mapping[str, str], default_tenant: str) -> Principal:
    """The principal a checked peer call acts for: the fleet itself (every scope; for the
    tenant it names, else ``default_tenant``) or the user it forwards."""
    subject = headers.get(SUBJECT_HEADER, FLEET_SUBJECT)
    if subject == FLEET_SUBJECT:
        return fleet_principal(headers.get(TENANT_HEADER, default_tenant))
    scopes = frozenset(headers.get(SCOPES_HEADER, "").split())
    return Principal(subject, headers.get(TENANT_HEADER, ""), scopes, float("inf"))
