"""Kafka clients for the parts that talk to Kafka outside the worker's app (the catalog's
batch producer, the Postgres mirror's consumer group, lag and end-offset readers, the fleet
generation's reader), and sending through the app.

Every client is made by a :class:`KafkaConnection`, so the brokers and the TLS/SASL
settings reach all of them the same way they reach the app's own clients
(:func:`faust_credentials`).
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import RecordMetadata
from faust.types.auth import CredentialsT

from mesh.settings import Settings

__all__ = [
    "AIOKafkaAdminClient",
    "AIOKafkaConsumer",
    "AIOKafkaProducer",
    "KafkaConnection",
    "KafkaError",
    "RecordMetadata",
    "TopicPartition",
    "TopicSender",
    "faust_credentials",
]


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
        certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
        keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
    )
    return context


def _client_auth(settings: Settings) -> dict[str, Any]:
    """aiokafka's keyword arguments for the configured security protocol."""
    auth: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = _ssl_context(settings)
    if context is not None:
        auth["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # checked by Settings
        auth["sasl_mechanism"] = settings.kafka_sasl_mechanism
        auth["sasl_plain_username"] = settings.kafka_sasl_username
        auth["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return auth


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The app's ``broker_credentials`` for the configured security protocol (None: plain)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        context = _ssl_context(settings)
        assert context is not None
        return faust.SSLCredentials(context)
    assert settings.kafka_sasl_password is not None  # checked by Settings
    # faust picks SASL_SSL when given a context, SASL_PLAINTEXT without one.
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=settings.kafka_sasl_password.get_secret_value(),
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=_ssl_context(settings),
    )


@dataclass(frozen=True)
class KafkaConnection:
    """Where the brokers are and how to authenticate: the one way clients are made."""

    bootstrap_servers: list[str]
    auth: Mapping[str, Any] = field(default_factory=lambda: {"security_protocol": "PLAINTEXT"})

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConnection:
        """The connection ``settings`` describe (brokers, TLS, SASL)."""
        return cls(settings.bootstrap_servers, _client_auth(settings))

    def consumer(self, *topics: str, **options: Any) -> AIOKafkaConsumer:
        """A consumer (not started) with ``options`` on top of the connection's."""
        return AIOKafkaConsumer(
            *topics, bootstrap_servers=self.bootstrap_servers, **self.auth, **options
        )

    def producer(self, **options: Any) -> AIOKafkaProducer:
        """A producer (not started) with ``options`` on top of the connection's."""
        return AIOKafkaProducer(bootstrap_servers=self.bootstrap_servers, **self.auth, **options)

    def admin(self, **options: Any) -> AIOKafkaAdminClient:
        """An admin client (not started) with ``options`` on top of the connection's."""
        return AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, **self.auth, **options)


class TopicSender:
    """Sends raw bytes to one topic through the worker app's producer (the topic is
    declared with the fleet's partition count on first use)."""

    def __init__(self, app: faust.App, topic: str) -> None:
        self._topic = app.topic(topic, key_type=bytes, value_type=bytes)

    async def send(
        self, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] | None = None
    ) -> Awaitable[Any]:
        """Queue one record; the returned awaitable resolves once Kafka acknowledged it."""
        sent: Awaitable[Any] = await self._topic.send(
            key=key,
            value=value,
            key_serializer="raw",
            value_serializer="raw",
            headers=list(headers) if headers is not None else None,
        )
        return sent
