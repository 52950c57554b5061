"""The agents' producer: librdkafka, idempotent, acks=all, with a linger.

``send_all`` returns only after every record of the batch is acknowledged by
the broker, so an agent acks its input only once its outputs are durable.
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException, Producer

from streams.records import OutRecord


class ProduceError(RuntimeError):
    """Some records of a batch were not acknowledged by the broker."""


class RecordTooLarge(ValueError):
    """A record is over the size limit: bad input, not an outage (never retried as one)."""

    def __init__(self, size: int, limit: int, topic: str) -> None:
        super().__init__(f"a {size:,}-byte record for {topic} is over the {limit:,}-byte limit")
        self.size, self.limit, self.topic = size, limit, topic


# librdkafka counts a little framing beside key, value and headers; the limit Herald checks stays below its own
PRODUCER_SIZE_MARGIN = 4096


def producer_config(bootstrap: str, max_record_bytes: int = 1_000_000, **extra: object) -> dict[str, object]:
    return {
        "bootstrap.servers": bootstrap,
        "message.max.bytes": max_record_bytes + PRODUCER_SIZE_MARGIN,
        "enable.idempotence": True,
        "acks": "all",
        # Java's and aiokafka's key hash: an upstream team producing with another client puts a user's events
        # on the same partition as Herald's own writers do (librdkafka's default, consistent_random, does not)
        "partitioner": "murmur2_random",
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "message.timeout.ms": 60_000,
        **extra,
    }


class Output:
    def __init__(self, bootstrap: str, max_record_bytes: int = 1_000_000, **extra: object) -> None:
        self.max_record_bytes = max_record_bytes
        self._producer = Producer(producer_config(bootstrap, max_record_bytes, **extra))
        self._lock = threading.Lock()

    def check_sizes(self, records: Iterable[OutRecord]) -> None:
        """Raise RecordTooLarge for the first record over the limit, before anything is produced."""
        for r in records:
            if (size := r.size) > self.max_record_bytes:
                raise RecordTooLarge(size, self.max_record_bytes, r.topic)

    def _produce(self, records: Iterable[OutRecord], errors: list[KafkaError]) -> int:
        def report(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                errors.append(err)

        n = 0
        produce, poll = self._producer.produce, self._producer.poll
        for r in records:
            while True:
                try:
                    produce(r.topic, r.value, r.key, headers=r.headers or None, on_delivery=report)
                    break
                except BufferError:  # local queue full: serve delivery reports, then try again
                    poll(0.05)
            n += 1
        return n

    def send_all_blocking(self, records: Iterable[OutRecord], timeout: float = 60.0) -> int:
        records = list(records)
        self.check_sizes(records)
        errors: list[KafkaError] = []
        with self._lock:
            n = self._produce(records, errors)
            left = self._producer.flush(timeout)
        if left:
            raise ProduceError(f"{left} records not acknowledged within {timeout}s")
        if errors:
            if all(e.code() == KafkaError.MSG_SIZE_TOO_LARGE for e in errors):
                # the broker's (or the topic's) limit is below ours: the record is the problem, not the cluster
                raise RecordTooLarge(self.max_record_bytes + 1, self.max_record_bytes, f"{len(errors)} record(s): {errors[0]}")
            raise ProduceError(f"{len(errors)} records failed: {errors[0]}")
        return n

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

    def close(self) -> None:
        self._producer.flush(10)


def is_kafka_error(exc: BaseException) -> bool:
    return isinstance(exc, (KafkaException, ProduceError))
