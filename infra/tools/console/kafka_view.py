"""What the overview reads from Kafka and Redis: consumer lag per agent, the DLQ by reason, circuit state.

The same measurements the scheduler's Kafka monitor exports as metrics (``scheduler.monitor``): lag from the
groups' committed offsets against the log ends (``infra.kafka.lag``), the DLQ read incrementally by a census
(``infra.kafka.dlq_census``). Sampled at most every ``refresh`` seconds, in a thread (blocking clients), whoever
asks; a failed sample keeps the last one and says why.
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from confluent_kafka.admin import AdminClient

from infra.kafka.consumer import consumer
from infra.kafka.dlq_census import DlqCensus
from infra.kafka.lag import sample_lag
from infra.settings import Settings
from infra.topics import admin_client
from streams.runtime.registry import watched
from streams.stores.circuit import RedisCircuit, circuit_key


@dataclass
class KafkaSample:
    lag: dict[tuple[str, str], int] = field(default_factory=dict)      # (agent, topic) → records behind
    dlq: dict[tuple[str, str], int] = field(default_factory=dict)      # (stage, reason) → dead letters
    at: float = 0.0
    error: str | None = None


class KafkaView:
    def __init__(self, settings: Settings, refresh: float, timeout: float = 10.0) -> None:
        self.settings = settings
        self.refresh = refresh
        self.timeout = timeout
        self.sample = KafkaSample()
        self._lock = threading.Lock()
        self._admin: AdminClient | None = None
        self._census: DlqCensus | None = None

    def current(self) -> KafkaSample:
        """The last sample, taken now when it is older than ``refresh`` (blocking: call it in a thread)."""
        with self._lock:
            if time.monotonic() - self.sample.at < self.refresh:
                return self.sample
            try:
                if self._admin is None:
                    self._admin = admin_client(self.settings)
                if self._census is None:
                    self._census = DlqCensus(consumer(self.settings, f"{self.settings.app_id}-console-{uuid.uuid4().hex[:8]}",
                                                      **{"enable.partition.eof": False}), self.settings.topic("dlq"))
                lag = sample_lag(self._admin, watched(self.settings), self.timeout)
                self._census.update(self.timeout)
                self.sample = KafkaSample(lag, dict(self._census.tally.by_reason()), time.monotonic())
            except Exception as exc:  # noqa: BLE001 - the broker away: the page shows the last sample and why
                self.sample = KafkaSample(self.sample.lag, self.sample.dlq, time.monotonic(), f"{type(exc).__name__}: {exc}")
            return self.sample

    def close(self) -> None:
        with self._lock:
            if self._census is not None:
                self._census.consumer.close()
                self._census = None


async def circuits(redis: aioredis.Redis, settings: Settings) -> list[tuple[str, str, int]]:
    """(provider account, state, failures in a row) of every circuit a deliver agent has stored."""
    prefix = circuit_key(settings, "")
    out: list[tuple[str, str, int]] = []
    keys = sorted([k async for k in redis.scan_iter(match=prefix + "*", count=200)])[:100]
    for k in keys:
        name = (k.decode() if isinstance(k, bytes) else k)[len(prefix):]
        b = await RedisCircuit(redis, k.decode() if isinstance(k, bytes) else k).load()
        out.append((name, b.state, b.failures))
    return out

