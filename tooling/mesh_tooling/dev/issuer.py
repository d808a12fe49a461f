"""The dev stack's own token issuer: an RSA key pair kept in the state directory.

Workers of the dev stack (and of the tests) verify tokens with its public key
(``MESH_AUTH_PUBLIC_KEY_FILE``); ``mesh token`` and ``mesh dev`` mint tokens with its
private key, which never leaves the state directory (mode 0600).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DEV_ISSUER = "dictamesh-dev"
DEV_AUDIENCE = "dictamesh"
KEY_ID = "dev-1"


@dataclass(frozen=True)
class DevIssuer:
    """Mints RS256 tokens a dev worker accepts."""

    private_key_file: Path
    public_key_file: Path
    issuer: str = DEV_ISSUER
    audience: str = DEV_AUDIENCE

    @classmethod
    def in_dir(cls, directory: Path) -> DevIssuer:
        """The issuer whose keys are in ``directory`` (made there on first use)."""
        directory.mkdir(parents=True, exist_ok=True)
        private, public = directory / "issuer-private.pem", directory / "issuer-public.pem"
        if not private.exists():
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            scratch = private.with_suffix(".new")
            scratch.write_bytes(b"")
            os.chmod(scratch, 0o600)  # before the key is in it
            scratch.write_bytes(pem)
            scratch.replace(private)
            public.write_bytes(
                key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
        return cls(private, public)

    def jwks(self) -> dict[str, Any]:
        """The issuer's public key as a JWKS document."""
        key = serialization.load_pem_public_key(self.public_key_file.read_bytes())
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))  # type: ignore[arg-type]
        return {"keys": [{**jwk, "kid": KEY_ID, "alg": "RS256", "use": "sig"}]}

    def worker_env(self) -> dict[str, str]:
        """The settings a worker needs to accept this issuer's tokens."""
        return {
            "MESH_AUTH": "jwt",
            "MESH_AUTH_PUBLIC_KEY_FILE": str(self.public_key_file),
            "MESH_AUTH_ISSUER": self.issuer,
            "MESH_AUTH_AUDIENCE": self.audience,
        }

    def mint(
        self,
        tenant: str,
        *,
        scopes: tuple[str, ...] = (),
        subject: str = "dev",
        ttl_s: float = 3600.0,
        **claims: Any,
    ) -> str:
        """A signed token for ``subject`` in ``tenant`` with ``scopes``, valid ``ttl_s``."""
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + int(ttl_s),
            "jti": uuid.uuid4().hex,
            "tenant": tenant,
            "scope": " ".join(scopes),
            **claims,
        }
        return jwt.encode(
            payload,
            self.private_key_file.read_bytes(),
            algorithm="RS256",
            headers={"kid": KEY_ID},
        )
