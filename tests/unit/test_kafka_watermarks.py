"""Offsets of a partition whose leadership is settling are asked again, not reported as a failure (CI saw a replay
job fail on NOT_LEADER_FOR_PARTITION right after its topic was created)."""
from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from infra.kafka.consumer import watermarks


class _Consumer:
    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls = 0

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, int):
            raise KafkaException(KafkaError(answer))
        return answer


def test_a_partition_whose_leader_is_settling_is_asked_again() -> None:
    c = _Consumer(KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, (3, 9))
    assert watermarks(c, TopicPartition("t", 0), 5.0) == (3, 9)   # type: ignore[arg-type]
    assert c.calls == 3


def test_an_error_that_will_not_pass_is_raised_at_once() -> None:
    c = _Consumer(KafkaError.TOPIC_AUTHORIZATION_FAILED, (0, 1))
    with pytest.raises(KafkaException) as caught:
        watermarks(c, TopicPartition("t", 0), 5.0)   # type: ignore[arg-type]
    assert caught.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED and c.calls == 1


def test_a_leader_that_never_settles_fails_within_the_timeout() -> None:
    c = _Consumer(KafkaError.NOT_LEADER_FOR_PARTITION)
    started = time.monotonic()
    with pytest.raises(KafkaException):
        watermarks(c, TopicPartition("t", 0), 0.5)   # type: ignore[arg-type]
    assert time.monotonic() - started < 1.5 and c.calls > 1
