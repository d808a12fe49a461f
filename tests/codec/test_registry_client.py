"""The registry client's connections: one TLS context for all its requests."""

from __future__ import annotations

import httpx
import pytest

from mesh.codec import RegistryClient

SCHEMA = {"type": "record", "name": "Ping", "fields": [{"name": "n", "type": "long"}]}


async def test_requests_share_one_tls_context(
    registry_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[object] = []
    original = httpx.create_ssl_context

    def counting(*args: object, **kwargs: object) -> object:
        made.append(args)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(httpx, "create_ssl_context", counting)
    monkeypatch.setattr("httpx._config.create_ssl_context", counting)
    client = RegistryClient(registry_url)
    schema_id = client.register("tls-context-test-value", SCHEMA)
    assert client.writer_schema(schema_id) is not None
    assert client.subject_version(schema_id, subject="tls-context-test-value") is not None
    assert len(made) == 1
