"""A minimal REST client for Directus, as the seed uses it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from mesh.errors import StackError
from mesh.sources.directus.client import error_text

__all__ = ["DirectusClient"]


class DirectusClient:
    """A minimal Directus REST client: JSON in, ``data`` out, errors as :class:`StackError`."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str, token: str | None = None):
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.token = token

    @classmethod
    async def login(
        cls, http: aiohttp.ClientSession, base_url: str, email: str, password: str
    ) -> DirectusClient:
        """Log in with ``POST /auth/login`` and return a client using the access token."""
        client = cls(http, base_url)
        try:
            data = await client.request(
                "POST", "/auth/login", {"email": email, "password": password}
            )
        except StackError as exc:
            raise StackError(
                f"cannot log in to Directus at {base_url} as {email}: {exc}. The admin user is "
                "created only when a database is bootstrapped the first time: use the "
                "credentials it was bootstrapped with, or start from a fresh database."
            ) from None
        client.token = str(data["access_token"])
        return client

    async def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """Call the API and return the response's ``data`` (None for 204)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        url = self.base_url + path
        try:
            async with self.http.request(
                method, url, json=json, params=params, headers=headers
            ) as resp:
                if resp.status == 204:
                    return None
                body: Any = await resp.json(content_type=None)
                if resp.status >= 400:
                    raise StackError(
                        f"Directus {method} {path} failed ({resp.status}): {error_text(body)}",
                        retriable=resp.status >= 500 or resp.status == 429,
                    )
        except aiohttp.ClientError as exc:
            raise StackError(
                f"Directus {method} {path} failed: {exc}; is Directus running at {self.base_url}?",
                retriable=True,
            ) from None
        except ValueError:
            raise StackError(f"Directus {method} {path} did not answer JSON") from None
        return body.get("data") if isinstance(body, dict) else body
