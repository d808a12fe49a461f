"""Kafka TLS/SASL and registry basic auth reach every client the product makes.

The dev broker cannot run them (Tansu 0.6 here: SASL users can only be created over an
authenticated connection on its memory storage, and its TLS listener options do not
start), so this proves the wiring: the settings are checked, the worker app's credentials
are what faust hands its consumer, producer and admin client, and every raw aiokafka
client of the product is made by :class:`KafkaConnection` (checked in the sources), which
carries them. Registry basic auth runs for real against the dev registry with auth on.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import ssl
import subprocess
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from mesh_tooling.registry import create_registry_app

from mesh.codec import RegistryClient
from mesh.errors import ConfigError, RegistryError
from mesh.runtime.app import build_faust_app
from mesh.runtime.kafka import KafkaConnection
from mesh.settings import Settings, load_settings

PRODUCT = Path(__file__).resolve().parents[2] / "mesh"
CLIENTS = {"AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient"}
SCHEMA = {"type": "record", "name": "T", "fields": [{"name": "a", "type": "int"}]}


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed CA certificate (what a Strimzi cluster CA secret holds)."""
    folder = tmp_path_factory.mktemp("ca")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=dictamesh-test-ca", "-keyout", str(folder / "ca.key"),
         "-out", str(folder / "ca.crt")],
        check=True, capture_output=True,
    )  # fmt: skip
    return folder / "ca.crt"


def settings_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(f"MESH_{name.upper()}", value)
    return load_settings()


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "MESH_KAFKA_SASL_USERNAME"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"},
            "MESH_KAFKA_SASL_PASSWORD",
        ),
        ({"kafka_ssl_certfile": "/x.crt"}, "MESH_KAFKA_SSL_KEYFILE"),
        ({"schema_registry_username": "u"}, "MESH_SCHEMA_REGISTRY_PASSWORD"),
    ],
)
def test_incomplete_security_settings_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], names: str
) -> None:
    with pytest.raises(ConfigError, match=names):
        settings_with(monkeypatch, **env)


def test_sasl_ssl_reaches_the_app_and_the_raw_clients_alike(
    monkeypatch: pytest.MonkeyPatch, ca_file: Path, tmp_path: Path
) -> None:
    settings = settings_with(
        monkeypatch,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="dictamesh",
        kafka_sasl_password="s3cret-password",
        kafka_ssl_cafile=str(ca_file),
        state_dir=str(tmp_path),
    )
    app = build_faust_app(settings)
    # What faust's driver gives its consumer, producer and topic admin client.
    faust_auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    raw_auth = KafkaConnection.from_settings(settings).auth
    for auth in (faust_auth, raw_auth):
        assert auth["security_protocol"] == "SASL_SSL"
        assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
        assert auth["sasl_plain_username"] == "dictamesh"
        assert auth["sasl_plain_password"] == "s3cret-password"
        assert isinstance(auth["ssl_context"], ssl.SSLContext)
        assert auth["ssl_context"].verify_mode == ssl.CERT_REQUIRED
        assert auth["ssl_context"].get_ca_certs()  # the CA file was loaded
    assert "s3cret-password" not in repr(settings)


async def test_a_raw_client_carries_the_connections_security(
    monkeypatch: pytest.MonkeyPatch, ca_file: Path
) -> None:
    settings = settings_with(
        monkeypatch,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(ca_file),
        broker_url="kafka://k1:9093;kafka://k2:9093",
    )
    kafka = KafkaConnection.from_settings(settings)
    consumer = kafka.consumer("t", enable_auto_commit=False)
    producer = kafka.producer(acks="all")
    try:
        for inner in (consumer._client, producer.client):
            assert inner._security_protocol == "SSL"
            assert inner._ssl_context is kafka.auth["ssl_context"]
            assert inner._bootstrap_servers == ["k1:9093", "k2:9093"]
    finally:  # never started: closing only releases them
        await consumer.stop()
        await producer.stop()
    plain = KafkaConnection.from_settings(Settings(kafka_security_protocol="PLAINTEXT"))
    assert dict(plain.auth) == {"security_protocol": "PLAINTEXT"}


def _client_calls(source: str) -> Iterator[tuple[int, str]]:
    # Tokens, not ast.parse: CPython 3.11.7's AST constructor can fail with "recursion
    # depth mismatch" after other tests recursed deeply in the same process.
    tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline)
              if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT)]  # fmt: skip
    for token, following in itertools.pairwise(tokens):
        named = token.string in CLIENTS or token.string == "KafkaConnection"
        if token.type == tokenize.NAME and named and following.string == "(":
            yield token.start[0], token.string


def test_only_the_kafka_connection_makes_kafka_clients() -> None:
    """Every client of the product is made by ``KafkaConnection.from_settings(...)``: a
    client made another way would connect without the configured TLS/SASL."""
    allowed = PRODUCT / "runtime" / "kafka.py"
    found = [
        f"{path.relative_to(PRODUCT.parent)}:{line} {name}(...)"
        for path in sorted(PRODUCT.rglob("*.py"))
        if path.resolve() != allowed
        for line, name in _client_calls(path.read_text())
    ]
    assert found == []
    # and the check sees a direct construction
    sample = (
        "x = 1\nc = AIOKafkaConsumer(bootstrap_servers=['x'])\nk = KafkaConnection.from_settings(s)"
    )
    assert list(_client_calls(sample)) == [(2, "AIOKafkaConsumer")]


async def test_registry_basic_auth_is_sent(tmp_path: Path) -> None:
    app = create_registry_app(tmp_path / "registry.db", basic_auth=("mesh", "registry-pw"))
    async with TestServer(app, host="127.0.0.1") as server:
        url = str(server.make_url("")).rstrip("/")
        with pytest.raises(RegistryError, match="401"):
            await asyncio.to_thread(RegistryClient(url).register, "t-value", SCHEMA)
        wrong = RegistryClient(url, auth=("mesh", "wrong"))
        with pytest.raises(RegistryError, match="401"):
            await asyncio.to_thread(wrong.register, "t-value", SCHEMA)
        settings = Settings(
            schema_registry_url=url,
            schema_registry_username="mesh",
            schema_registry_password="registry-pw",  # type: ignore[arg-type]
        )
        client = RegistryClient.from_settings(settings)
        # The registry client blocks, and the registry runs on this loop: call it in a thread.
        schema_id = await asyncio.to_thread(client.register, "t-value", SCHEMA)
        assert schema_id >= 1
        assert await asyncio.to_thread(
            RegistryClient(url, auth=("mesh", "registry-pw")).writer_schema, schema_id
        )
