"""The one consumer factory (the batch engine, the retry tiers, the DLQ tool) and message → InRecord."""
from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Message

from infra.kafka.config import consumer_config
from infra.kafka.records import InRecord
from infra.settings import Settings


def consumer(settings: Settings, group: str, **overrides: Any) -> Consumer:
    """A librdkafka consumer in ``group`` with Herald's connection; overrides use librdkafka's names."""
    return Consumer(consumer_config(settings, group, **overrides))


def to_in_record(m: Message) -> InRecord:
    ts = m.timestamp()[1]
    # the stubs type topic/partition/offset Optional (unset on error events, which never get here) and headers as
    # librdkafka's producer accepts them; a consumer hands (str, bytes) pairs: no casts in the per-record path
    return InRecord(m.topic(), m.partition(), m.offset(), m.key(), m.value(), list(m.headers() or []),  # type: ignore[arg-type]
                    ts if ts > 0 else 0)
