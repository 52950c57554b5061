"""The one producer: librdkafka, idempotent, acks=all, with a linger.

Every Herald writer (the agents, the SDK, the campaign producer, the DLQ replay, the API, the
scheduler) produces through ``Producer``: a full local queue is waited out by serving delivery
reports, never by dropping a record; a record over the size limit is refused before anything is
produced (``RecordTooLarge``: bad input, not an outage); ``send_all`` returns only once the broker
acknowledged every record, so a caller acks its input only once its outputs are durable.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

from infra.kafka.config import producer_config
from infra.kafka.records import Headers, OutRecord
from infra.settings import Settings

DeliveryCallback = Callable[[KafkaError | None, Any], None]


class ProduceError(RuntimeError):
    """Some records of a batch were not acknowledged by the broker."""


class RecordTooLarge(ValueError):
    """A record is over the size limit: bad input, not an outage (never retried as one)."""

    def __init__(self, size: int, limit: int, topic: str) -> None:
        super().__init__(f"a {size:,}-byte record for {topic} is over the {limit:,}-byte limit")
        self.size, self.limit, self.topic = size, limit, topic


def is_kafka_error(exc: BaseException) -> bool:
    return isinstance(exc, (KafkaException, ProduceError))

# _HEADERS: Herald's Headers is list[tuple[str, bytes]]; the stubs want list[tuple[str, str | bytes | None]], and list is
# invariant, so mypy refuses the narrower list it would accept as a Sequence: an ignore rather than a cast per record


class Producer:
    def __init__(self, settings: Settings, **overrides: Any) -> None:
        self.max_record_bytes = settings.max_record_bytes
        self._producer = confluent_kafka.Producer(producer_config(settings, **overrides))
        self._lock = threading.Lock()

    # --- one record at a time (streaming writers: campaigns, the scheduler, the SDK) -------------
    def produce(self, record: OutRecord, on_delivery: DeliveryCallback | None = None) -> None:
        """Queue one record; waits (serving delivery reports) while librdkafka's local queue is full."""
        self.produce_value(record.topic, record.value, record.key, record.headers, on_delivery)

    def produce_value(self, topic: str, value: bytes, key: bytes | None, headers: Headers | None = None,
                      on_delivery: DeliveryCallback | None = None) -> None:
        """``produce`` without building an OutRecord (the campaign producer's hot loop)."""
        while True:
            try:
                if on_delivery is None:
                    self._producer.produce(topic, value, key, headers=headers or None)  # type: ignore[arg-type]  # see _HEADERS
                else:
                    self._producer.produce(topic, value, key, headers=headers or None,  # type: ignore[arg-type]  # see _HEADERS
                                           on_delivery=on_delivery)
                return
            except BufferError:
                self._producer.poll(0.05)

    def try_produce(self, record: OutRecord, on_delivery: DeliveryCallback) -> bool:
        """Queue one record unless librdkafka's local queue is full (False): for callers that wait their own way."""
        try:
            self._producer.produce(record.topic, record.value, record.key, headers=record.headers or None,  # type: ignore[arg-type]
                                   on_delivery=on_delivery)
            return True
        except BufferError:
            return False

    def poll(self, timeout: float = 0.0) -> int:
        return self._producer.poll(timeout)

    def flush(self, timeout: float) -> int:
        """Records still not acknowledged after ``timeout`` seconds."""
        return self._producer.flush(timeout)

    def __len__(self) -> int:
        return len(self._producer)

    # --- a batch, acknowledged before returning -------------------------------------------------
    def check_sizes(self, records: Iterable[OutRecord]) -> None:
        """Raise RecordTooLarge for the first record over the limit, before anything is produced."""
        for r in records:
            if (size := r.size) > self.max_record_bytes:
                raise RecordTooLarge(size, self.max_record_bytes, r.topic)

    def send_all_blocking(self, records: Iterable[OutRecord], timeout: float = 60.0) -> int:
        records = list(records)
        self.check_sizes(records)
        errors: list[KafkaError] = []

        def report(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                errors.append(err)

        with self._lock:
            for r in records:
                self.produce(r, report)
            left = self._producer.flush(timeout)
        if left:
            raise ProduceError(f"{left} records not acknowledged within {timeout}s")
        if errors:
            if all(e.code() == KafkaError.MSG_SIZE_TOO_LARGE for e in errors):
                # the broker's (or the topic's) limit is below ours: the record is the problem, not the cluster
                raise RecordTooLarge(self.max_record_bytes + 1, self.max_record_bytes, f"{len(errors)} record(s): {errors[0]}")
            raise ProduceError(f"{len(errors)} records failed: {errors[0]}")
        return len(records)

    async def send_all(self, records: list[OutRecord], timeout: float = 60.0) -> int:
        if not records:
            return 0
        return await asyncio.to_thread(self.send_all_blocking, records, timeout)

    def reachable(self, timeout: float = 3.0) -> bool:
        """The cluster answers a metadata request (blocking)."""
        try:
            self._producer.list_topics(timeout=timeout)
            return True
        except KafkaException:
            return False

    def purge(self) -> None:
        """Drop every record not yet sent (a writer giving up on an unreachable cluster)."""
        self._producer.purge()

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
