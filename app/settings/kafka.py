"""The inbound on Kafka: ``INBOUND=kafka``, the brokers, the topic, and security.

With ``INBOUND=redis`` (the default) nothing here is used. With ``INBOUND=kafka`` the worker
reads ``KAFKA_TOPIC`` from ``KAFKA_BOOTSTRAP_SERVERS`` as the consumer group
``INSIGHT_GROUP``; everything it writes stays on Redis. The security settings follow
aiokafka's names (``security_protocol``, ``sasl_mechanism``, ``sasl_plain_username``, ...)
with a ``KAFKA_`` prefix, for managed Kafka (MSK, Confluent Cloud). The password is a
``SecretStr``: never logged, never in an error message.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, FilePath, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings

__all__ = ["Inbound", "KafkaSettings", "SaslMechanism", "SecurityProtocol"]

# Kafka's rule for topic names (legal characters, at most 249 of them).
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})$")


class Inbound(StrEnum):
    REDIS = "redis"  # the stream INSIGHT_STREAM (the contract's acp:groq_queue)
    KAFKA = "kafka"  # the topic KAFKA_TOPIC


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"

    @property
    def uses_ssl(self) -> bool:
        return self in {SecurityProtocol.SSL, SecurityProtocol.SASL_SSL}

    @property
    def uses_sasl(self) -> bool:
        return self in {SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL}


class SaslMechanism(StrEnum):
    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class KafkaSettings(BaseSettings):
    """Where events come from: Redis (default) or a Kafka topic, and how to reach Kafka."""

    inbound: Inbound = Field(Inbound.REDIS, description="redis (INSIGHT_STREAM) or kafka.")
    kafka_bootstrap_servers: str = Field(
        "localhost:9092", description="Comma-separated host:port of Kafka brokers."
    )
    kafka_topic: str = Field("acp.groq.events", description="The topic of decision events.")
    kafka_security_protocol: SecurityProtocol = Field(
        SecurityProtocol.PLAINTEXT, description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        SaslMechanism.PLAIN, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL_*)."
    )
    kafka_sasl_plain_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_plain_password: SecretStr | None = Field(None, description="SASL password.")
    kafka_ssl_cafile: FilePath | None = Field(None, description="CA bundle (PEM) for TLS.")
    kafka_ssl_certfile: FilePath | None = Field(None, description="Client certificate (mTLS).")
    kafka_ssl_keyfile: FilePath | None = Field(None, description="Client key (mTLS).")
    kafka_session_timeout_ms: int = Field(
        10_000, ge=1_000, le=300_000, description="Group session: a dead member's partitions move."
    )
    kafka_heartbeat_interval_ms: int = Field(
        3_000, ge=100, le=100_000, description="Heartbeats to the group coordinator."
    )
    kafka_auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest",
        description="Where a group with no commit starts: earliest (events written before "
        "the worker's first start are processed, as on Redis) or latest.",
    )

    @field_validator(
        "kafka_sasl_plain_username",
        "kafka_sasl_plain_password",
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _servers(cls, value: str) -> str:
        servers = [part.strip() for part in value.split(",") if part.strip()]
        if not servers:
            raise ValueError("names no broker (host:port, comma-separated)")
        for server in servers:
            match = _HOST_PORT.match(server)
            if match is None or not 0 < int(match.group(2)) < 65_536:
                raise ValueError(f"{server!r} is not host:port")
        return ",".join(servers)

    @field_validator("kafka_topic")
    @classmethod
    def _topic(cls, value: str) -> str:
        if not _TOPIC.match(value) or value in {".", ".."}:
            raise ValueError("not a Kafka topic name (letters, digits, '.', '_', '-'; <= 249)")
        return value

    @model_validator(mode="after")
    def _security(self) -> Self:
        problems = []
        protocol = self.kafka_security_protocol
        if protocol.uses_sasl:
            if not self.kafka_sasl_plain_username:
                problems.append(f"KAFKA_SASL_PLAIN_USERNAME: required with {protocol.value}")
            if self.kafka_sasl_plain_password is None:
                problems.append(f"KAFKA_SASL_PLAIN_PASSWORD: required with {protocol.value}")
        if not protocol.uses_ssl:
            for name, value in (
                ("KAFKA_SSL_CAFILE", self.kafka_ssl_cafile),
                ("KAFKA_SSL_CERTFILE", self.kafka_ssl_certfile),
                ("KAFKA_SSL_KEYFILE", self.kafka_ssl_keyfile),
            ):
                if value is not None:
                    problems.append(f"{name}: set, but KAFKA_SECURITY_PROTOCOL={protocol.value}")
        if (self.kafka_ssl_certfile is None) != (self.kafka_ssl_keyfile is None):
            problems.append("KAFKA_SSL_CERTFILE, KAFKA_SSL_KEYFILE: set both or neither")
        if self.kafka_heartbeat_interval_ms >= self.kafka_session_timeout_ms:
            problems.append("KAFKA_HEARTBEAT_INTERVAL_MS: must be below KAFKA_SESSION_TIMEOUT_MS")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def kafka_servers(self) -> list[str]:
        return self.kafka_bootstrap_servers.split(",")

    @property
    def kafka_stream_ref(self) -> str:
        """How the store and the dead letters name the topic (never a Redis key in use)."""
        return f"kafka:{self.kafka_topic}"

    @property
    def kafka_ssl_files(self) -> tuple[Path | None, Path | None, Path | None]:
        return self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile
