"""INBOUND=kafka settings: defaults, a bad value named at start, the password never shown."""

from __future__ import annotations

import ssl

import pytest
from faststream.security import SASLPlaintext, SASLScram512

from app.bootstrap.kafka import kafka_security
from app.settings import Inbound, SettingsError, load_settings
from app.settings.kafka import SecurityProtocol
from tests.support.environment import settings_from

PASSWORD = "kafka-Secret-Pa55word-0xDEADBEEF"


def refusal(**values: object) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(**values)
    return str(caught.value)


def test_the_defaults_read_redis_and_name_the_contract_topic():
    """INBOUND defaults to redis; the Kafka defaults are the contract's."""
    settings = settings_from()
    assert settings.inbound is Inbound.REDIS
    assert settings.kafka_servers == ["localhost:9092"]
    assert settings.kafka_topic == "acp.groq.events"
    assert settings.kafka_security_protocol is SecurityProtocol.PLAINTEXT
    assert settings.kafka_auto_offset_reset == "earliest"
    assert kafka_security(settings) is None


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"inbound": "nats"}, "INBOUND"),
        ({"kafka_bootstrap_servers": "broker-1"}, "KAFKA_BOOTSTRAP_SERVERS"),
        ({"kafka_bootstrap_servers": " , "}, "KAFKA_BOOTSTRAP_SERVERS"),
        ({"kafka_topic": "events with spaces"}, "KAFKA_TOPIC"),
        ({"kafka_security_protocol": "SASL_TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"kafka_security_protocol": "SASL_SSL"}, "KAFKA_SASL_PLAIN_USERNAME"),
        ({"kafka_ssl_cafile": "/nonexistent/ca.pem"}, "KAFKA_SSL_CAFILE"),
        (
            {"kafka_session_timeout_ms": 2000, "kafka_heartbeat_interval_ms": 2000},
            "KAFKA_HEARTBEAT_INTERVAL_MS",
        ),
        ({"inbound": "kafka", "redis_mode": "cluster"}, "INBOUND"),
    ],
)
def test_a_bad_kafka_setting_stops_the_worker_naming_it(values, named, monkeypatch):
    """Each bad value is refused at start with the setting's name."""
    for name in ("INBOUND", "REDIS_MODE"):
        monkeypatch.delenv(name, raising=False)
    assert named in refusal(**values)


def test_the_sasl_password_is_never_in_a_refusal():
    """A SASL setup missing its user is refused without showing the password."""
    message = refusal(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_plain_password=PASSWORD)
    assert "KAFKA_SASL_PLAIN_USERNAME" in message
    assert PASSWORD not in message
    settings = settings_from(
        kafka_security_protocol="sasl_plaintext",
        kafka_sasl_plain_username="svc",
        kafka_sasl_plain_password=PASSWORD,
    )
    assert PASSWORD not in repr(settings)


def test_sasl_settings_become_faststream_security_with_aiokafka_names():
    """SASL_SSL + SCRAM-SHA-512 is FastStream's SASLScram512 over TLS; PLAIN is SASLPlaintext."""
    scram = kafka_security(
        settings_from(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="scram-sha-512",
            kafka_sasl_plain_username="svc",
            kafka_sasl_plain_password=PASSWORD,
        )
    )
    assert isinstance(scram, SASLScram512)
    assert scram.use_ssl
    assert isinstance(scram.ssl_context, ssl.SSLContext)
    assert (scram.username, scram.password) == ("svc", PASSWORD)
    plain = kafka_security(
        settings_from(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_plain_username="svc",
            kafka_sasl_plain_password=PASSWORD,
        )
    )
    assert isinstance(plain, SASLPlaintext)
    assert not plain.use_ssl


def test_the_sasl_password_is_among_the_secrets_the_logs_mask():
    """The log redaction is given the SASL password with the API keys."""
    from app.bootstrap.worker import secrets

    settings = settings_from(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_plain_username="svc",
        kafka_sasl_plain_password=PASSWORD,
    )
    assert PASSWORD in secrets(settings)
