"""The one consumer factory (the batch engine, the retry tiers, the DLQ tool) and message → InRecord."""
from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from infra.kafka.config import consumer_config
from infra.kafka.records import InRecord
from infra.settings import Settings


def consumer(settings: Settings, group: str, **overrides: Any) -> Consumer:
    """A librdkafka consumer in ``group`` with Herald's connection; overrides use librdkafka's names."""
    return Consumer(consumer_config(settings, group, **overrides))


# what a broker answers while a partition's leadership is still settling (a topic just created, a broker restarting)
_SETTLING = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                       KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TRANSPORT})


def watermarks(c: Consumer, tp: TopicPartition, timeout: float) -> tuple[int, int]:
    """A partition's (low, high) offsets, asked again while its leadership settles, for at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        try:
            low, high = c.get_watermark_offsets(tp, timeout=max(deadline - time.monotonic(), 0.1))
            return low, high
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            settling = err is not None and (err.code() in _SETTLING or err.retriable())
            if not settling or time.monotonic() + pause >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


def to_in_record(m: Message) -> InRecord:
    ts = m.timestamp()[1]
    # the stubs type topic/partition/offset Optional (unset on error events, which never get here) and headers as
    # librdkafka's producer accepts them; a consumer hands (str, bytes) pairs: no casts in the per-record path
    return InRecord(m.topic(), m.partition(), m.offset(), m.key(), m.value(), list(m.headers() or []),  # type: ignore[arg-type]
                    ts if ts > 0 else 0)
