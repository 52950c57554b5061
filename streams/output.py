"""Moved to ``infra.kafka.producer`` (the wire layer); kept while callers move over."""
from __future__ import annotations

from typing import Any

from infra.kafka.producer import ProduceError, Producer, RecordTooLarge, is_kafka_error
from infra.settings import Settings

__all__ = ["Output", "ProduceError", "Producer", "RecordTooLarge", "is_kafka_error"]


def Output(bootstrap: str, max_record_bytes: int = 1_000_000, **extra: Any) -> Producer:  # noqa: N802
    return Producer(Settings(kafka_bootstrap=bootstrap, max_record_bytes=max_record_bytes), **extra)


def producer_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    from infra.kafka.config import producer_config as config

    return config(Settings(kafka_bootstrap=bootstrap), **extra)
