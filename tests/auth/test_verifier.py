"""Bearer tokens are verified with PyJWT against a real key: every attack on the list is
refused, with the reason kept for the log and only "invalid" told to the client."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mesh.auth import AuthError, TokenVerifier
from mesh.auth.keys import PemKey
from mesh.settings import Settings

ISSUER = "https://issuer.example"
TENANT = "acme"


def _pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@pytest.fixture(scope="module")
def rsa_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class CountingKeys(PemKey):
    """The PEM key source, counting how often a key was asked for."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.asked = 0

    async def key_for(self, kid: str | None) -> Any:
        self.asked += 1
        return await super().key_for(kid)


def _verifier(tmp_path: Path, key: Any, **settings: Any) -> Any:
    pem = tmp_path / "public.pem"
    pem.write_bytes(_pem(key))
    config = Settings(auth="jwt", auth_public_key_file=pem, auth_issuer=ISSUER, **settings)
    keys = CountingKeys(pem)
    return TokenVerifier(config, keys, [TENANT, "other"]), keys


def _claims(**over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": "dictamesh", "sub": "ada", "iat": now, "nbf": now,
              "exp": now + 600, "tenant": TENANT, "scope": "orders:read pii:read"}  # fmt: skip
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def _sign(key: Any, algorithm: str = "RS256", **over: Any) -> str:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return jwt.encode(_claims(**over), pem, algorithm=algorithm, headers={"kid": "k1"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_a_valid_token_names_its_subject_tenant_and_scopes(
    tmp_path: Path, rsa_key: Any
) -> None:
    verifier, _ = _verifier(tmp_path, rsa_key)
    principal = await verifier.verify(f"Bearer {_sign(rsa_key)}")
    assert (principal.subject, principal.tenant) == ("ada", TENANT)
    assert principal.scopes == {"orders:read", "pii:read"}
    listed = await verifier.verify(f"bearer {_sign(rsa_key, scope=['a', 'b'])}")
    assert listed.scopes == {"a", "b"}


async def test_es256_is_accepted_with_an_ec_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    verifier, _ = _verifier(tmp_path, key)
    principal = await verifier.verify(f"Bearer {_sign(key, 'ES256')}")
    assert principal.tenant == TENANT


@pytest.fixture(scope="module")
def forged(rsa_key: Any) -> dict[str, str]:
    """Tokens an attacker could send, by the attack's name."""
    valid = _sign(rsa_key)
    head, _, signature = valid.split(".")
    tampered = _b64(json.dumps(_claims(tenant="other")).encode())
    hs_head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    hs_body = _b64(json.dumps(_claims()).encode())
    hs_sig = hmac.new(_pem(rsa_key), f"{hs_head}.{hs_body}".encode(), hashlib.sha256).digest()
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    return {
        "alg none": jwt.encode(_claims(), None, algorithm="none"),  # type: ignore[arg-type]
        "HS256 signed with the public key": f"{hs_head}.{hs_body}.{_b64(hs_sig)}",
        "signed by another key": _sign(other_key),
        "tampered payload": f"{head}.{tampered}.{signature}",
        "expired": _sign(rsa_key, exp=now - 3600, iat=now - 7200, nbf=now - 7200),
        "not yet valid": _sign(rsa_key, nbf=now + 3600),
        "wrong issuer": _sign(rsa_key, iss="https://evil.example"),
        "wrong audience": _sign(rsa_key, aud="someone-else"),
        "no exp": _sign(rsa_key, exp=None),
        "no subject": _sign(rsa_key, sub=None),
        "no tenant claim": _sign(rsa_key, tenant=None),
        "a tenant the config does not know": _sign(rsa_key, tenant="initech"),
        "a scope claim of the wrong type": _sign(rsa_key, scope={"a": 1}),
        "over the size limit": _sign(rsa_key, pad="x" * 5000),
        "not a JWT": "not.a.jwt",
    }


@pytest.mark.parametrize(
    "attack",
    [
        "alg none", "HS256 signed with the public key", "signed by another key",
        "tampered payload", "expired", "not yet valid", "wrong issuer", "wrong audience",
        "no exp", "no subject", "no tenant claim", "a tenant the config does not know",
        "a scope claim of the wrong type", "over the size limit", "not a JWT",
    ],
)  # fmt: skip
async def test_forged_and_wrong_tokens_are_refused(
    tmp_path: Path, rsa_key: Any, forged: dict[str, str], attack: str
) -> None:
    verifier, _ = _verifier(tmp_path, rsa_key)
    with pytest.raises(AuthError) as refused:
        await verifier.verify(f"Bearer {forged[attack]}")
    assert refused.value.public == "invalid bearer token"  # the client is told nothing more
    assert str(refused.value)  # the log is told why


@pytest.mark.parametrize("header", [None, "", "Basic dXNlcjpwdw==", "Bearer", "Bearer   "])
async def test_a_missing_token_is_refused_as_missing(
    tmp_path: Path, rsa_key: Any, header: str | None
) -> None:
    verifier, _ = _verifier(tmp_path, rsa_key)
    with pytest.raises(AuthError) as refused:
        await verifier.verify(header)
    assert refused.value.public == "missing bearer token"


async def test_leeway_tolerates_small_clock_skew(tmp_path: Path, rsa_key: Any) -> None:
    verifier, _ = _verifier(tmp_path, rsa_key, auth_leeway_s=30)
    now = int(time.time())
    assert await verifier.verify(f"Bearer {_sign(rsa_key, nbf=now + 10)}")
    assert await verifier.verify(f"Bearer {_sign(rsa_key, exp=now - 10)}")


async def test_a_verified_token_is_kept_until_it_expires(tmp_path: Path, rsa_key: Any) -> None:
    verifier, keys = _verifier(tmp_path, rsa_key, auth_leeway_s=0)
    expires = int(time.time()) + 2
    token = f"Bearer {_sign(rsa_key, exp=expires)}"
    first = await verifier.verify(token)
    for _ in range(5):
        assert await verifier.verify(token) == first
    assert keys.asked == 1  # verified once
    await asyncio.sleep(expires + 0.2 - time.time())  # past exp: verified again, refused
    with pytest.raises(AuthError):
        await verifier.verify(token)
    assert keys.asked == 2
