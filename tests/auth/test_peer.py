"""Peer calls are signed with the fleet secret: any change to what was signed, a stale
time or a replayed nonce is refused."""

from __future__ import annotations

import pytest

from mesh.auth.peer import (
    SCOPES_HEADER,
    SIGNATURE_HEADER,
    TENANT_HEADER,
    WINDOW_S,
    PeerAuthError,
    PeerSigner,
    caller,
)
from mesh.auth.principal import Principal

SECRET = b"s" * 32
PATH = "/api/v1/internal/entities?x=1"
BODY = b'{"keys": ["a"]}'


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _pair() -> tuple[PeerSigner, PeerSigner, Clock]:
    clock = Clock()
    return PeerSigner(SECRET, clock=clock), PeerSigner(SECRET, clock=clock), clock


def test_a_signed_call_passes_and_names_its_caller() -> None:
    sender, receiver, _ = _pair()
    ada = Principal("ada", "acme", frozenset({"b", "a"}), 0.0)
    headers = sender.headers("POST", PATH, BODY, ada)
    receiver.check("POST", PATH, BODY, headers)
    assert caller(headers, "default") == Principal(
        "ada", "acme", frozenset({"a", "b"}), float("inf")
    )
    fleet = sender.headers("GET", "/api/v1/internal/counts", b"")
    receiver.check("GET", "/api/v1/internal/counts", b"", fleet)
    assert caller(fleet, "default").has_scope("anything")  # the fleet's own call


@pytest.mark.parametrize(
    ("what", "method", "path", "body", "header", "value"),
    [
        ("method", "GET", PATH, BODY, None, None),
        ("path", "POST", "/api/v1/internal/scan", BODY, None, None),
        ("query", "POST", "/api/v1/internal/entities?x=2", BODY, None, None),
        ("body", "POST", PATH, b'{"keys": ["b"]}', None, None),
        ("tenant", "POST", PATH, BODY, TENANT_HEADER, "initech"),
        ("scopes", "POST", PATH, BODY, SCOPES_HEADER, "a b pii:read"),
        ("signature", "POST", PATH, BODY, SIGNATURE_HEADER, "t=1,n=x,v1=00"),
    ],
)
def test_a_change_to_anything_signed_is_refused(
    what: str, method: str, path: str, body: bytes, header: str | None, value: str | None
) -> None:
    sender, receiver, _ = _pair()
    headers = sender.headers("POST", PATH, BODY, Principal("ada", "acme", frozenset("ab"), 0.0))
    if header is not None:
        headers[header] = str(value)
    with pytest.raises(PeerAuthError):
        receiver.check(method, path, body, headers)


def test_stale_replayed_missing_and_foreign_signatures_are_refused() -> None:
    sender, receiver, clock = _pair()
    headers = sender.headers("POST", PATH, BODY)
    receiver.check("POST", PATH, BODY, headers)
    with pytest.raises(PeerAuthError, match="replay"):
        receiver.check("POST", PATH, BODY, headers)  # the same request again
    late = sender.headers("POST", PATH, BODY)
    clock.now += WINDOW_S + 1
    with pytest.raises(PeerAuthError, match="ago"):
        receiver.check("POST", PATH, BODY, late)
    with pytest.raises(PeerAuthError, match="no fleet signature"):
        receiver.check("POST", PATH, BODY, {})
    other = PeerSigner(b"o" * 32, clock=clock).headers("POST", PATH, BODY)
    with pytest.raises(PeerAuthError, match="does not match"):
        receiver.check("POST", PATH, BODY, other)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        PeerSigner(b"short")
