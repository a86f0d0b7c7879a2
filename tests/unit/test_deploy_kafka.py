"""deploy/kubernetes/kafka/: KEDA's kafka ScaledObject, checked like the redis-streams one.

The trigger's metadata against the fields KEDA's kafka scaler documents (strict: a typo
fails), its names against the worker's defaults, and its scaling policy against the Redis
deployment's, so the two stay one policy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import Field, ValidationError

from app.settings import Settings
from tests.unit.test_deploy_files import (
    _BOOL,
    _COUNT,
    ScaledObject,
    ScaledObjectSpec,
    _Strict,
    _Trigger,
    keda_hpa_behavior,
    raw_trigger,
    the,
)

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SCALED_OBJECT = ROOT / "deploy" / "kubernetes" / "kafka" / "keda-scaledobject.yaml"


class KafkaMetadata(_Strict):
    """KEDA's kafka scaler metadata (strings, as KEDA reads them), 2.x."""

    bootstrapServers: str = Field(pattern=r"^[^,\s:]+:[0-9]+(,[^,\s:]+:[0-9]+)*$")
    consumerGroup: str = Field(min_length=1)
    topic: str | None = Field(None, min_length=1)
    lagThreshold: str | None = Field(None, pattern=_COUNT)
    activationLagThreshold: str | None = Field(None, pattern=_COUNT)
    offsetResetPolicy: Literal["latest", "earliest"] | None = None
    allowIdleConsumers: str | None = Field(None, pattern=_BOOL)
    scaleToZeroOnInvalidOffset: str | None = Field(None, pattern=_BOOL)
    excludePersistentLag: str | None = Field(None, pattern=_BOOL)
    limitToPartitionsWithLag: str | None = Field(None, pattern=_BOOL)
    partitionLimitation: str | None = None
    version: str | None = None


class KafkaTrigger(_Trigger):
    type: Literal["kafka"]
    metadata: KafkaMetadata


class KafkaScaledObjectSpec(ScaledObjectSpec):
    triggers: list[KafkaTrigger] = Field(min_length=1)  # type: ignore[assignment]


class KafkaScaledObject(ScaledObject):
    spec: KafkaScaledObjectSpec


def kafka_scaled_object() -> KafkaScaledObject:
    (doc,) = list(yaml.safe_load_all(KAFKA_SCALED_OBJECT.read_text()))
    return KafkaScaledObject.model_validate(doc)


def test_the_kafka_scaled_object_has_only_documented_fields_and_the_worker_names():
    """Topic, group and offset policy are the worker's defaults (KAFKA_TOPIC, INSIGHT_GROUP,
    KAFKA_AUTO_OFFSET_RESET); no more pods than partitions."""
    scaled = kafka_scaled_object()
    (trigger,) = scaled.spec.triggers
    defaults = Settings.model_fields
    assert trigger.metadata.topic == defaults["kafka_topic"].default
    assert trigger.metadata.consumerGroup == defaults["insight_group"].default
    assert trigger.metadata.offsetResetPolicy == defaults["kafka_auto_offset_reset"].default
    assert trigger.metadata.allowIdleConsumers == "false"
    assert scaled.spec.scaleTargetRef.name == "acp-groq-worker"


def test_the_kafka_scaled_object_scales_as_the_redis_one_does():
    """Same replica bounds, HPA behaviour and lag per replica as the redis-streams file."""
    redis_doc = the("ScaledObject")
    redis = ScaledObject.model_validate(redis_doc)
    kafka = kafka_scaled_object()
    assert (kafka.spec.minReplicaCount, kafka.spec.maxReplicaCount) == (
        redis.spec.minReplicaCount,
        redis.spec.maxReplicaCount,
    )
    assert keda_hpa_behavior(kafka) == keda_hpa_behavior(redis)
    lag_count = raw_trigger(redis_doc, "redis-streams")["metadata"]["lagCount"]
    assert kafka.spec.triggers[0].metadata.lagThreshold == lag_count


def test_a_typo_in_the_kafka_trigger_is_refused():
    """The model is strict: an unknown field (a typo) fails validation."""
    (doc,) = list(yaml.safe_load_all(KAFKA_SCALED_OBJECT.read_text()))
    doc["spec"]["triggers"][0]["metadata"]["lagThreshhold"] = "10"
    with pytest.raises(ValidationError, match="lagThreshhold"):
        KafkaScaledObject.model_validate(doc)
