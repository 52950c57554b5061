"""The scheduler's Kafka monitor: every agent's consumer lag and the DLQ's content, sampled from the broker.

Lag comes from each agent's group's committed offsets against the log ends (infra.kafka.lag), so it is fresh
when an agent is stuck or no worker runs it; the DLQ is read incrementally by a census (infra.kafka.dlq_census).
It runs in a thread of its own: a slow or absent broker never holds up the outbox loop.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid

from confluent_kafka.admin import AdminClient

from infra.kafka.consumer import consumer
from infra.kafka.dlq_census import DlqCensus
from infra.kafka.lag import Watched, sample_lag
from infra.settings import Settings
from infra.topics import admin_client
from scheduler.metrics import SchedulerMetrics

log = logging.getLogger("herald.scheduler.monitor")


class KafkaMonitor:
    def __init__(self, settings: Settings, watched: list[Watched], metrics: SchedulerMetrics,
                 admin: AdminClient | None = None, timeout: float = 10.0) -> None:
        self.settings = settings
        self.watched = watched
        self.metrics = metrics
        self.timeout = timeout
        self.admin = admin or admin_client(settings)
        # no group is ever joined or committed: the census assigns partitions itself
        self.census = DlqCensus(consumer(settings, f"{settings.app_id}-dlq-census-{uuid.uuid4().hex[:8]}",
                                         **{"enable.partition.eof": False}), settings.topic("dlq"))
        self._lag_labels: set[tuple[str, str]] = set()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        """One sample of every watched agent's lag and of the DLQ (blocking)."""
        lag = sample_lag(self.admin, self.watched, self.timeout)
        for gone in self._lag_labels - set(lag):
            self.metrics.consumer_lag.remove(*gone)
        for (agent, topic), n in lag.items():
            self.metrics.consumer_lag.labels(agent, topic).set(n)
        self._lag_labels = set(lag)
        self.census.update(self.timeout)
        for (stage, reason), n in self.census.tally.by_reason().items():
            self.metrics.dlq_records.labels(stage, reason).set(n)
        self.metrics.monitor_last_sample.set(time.time())

    def run(self, stop: threading.Event, interval: float) -> None:
        """Sample every ``interval`` seconds until ``stop``; a failed sample is logged and the next one tried."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.sample()
            except Exception as exc:  # noqa: BLE001 - the broker away, a timeout: the next sample tries again
                log.warning("Kafka monitor: sample failed (%s); next in %.0fs", exc, interval)
            stop.wait(max(0.0, interval - (time.monotonic() - started)))

    def start(self, stop: threading.Event, interval: float) -> threading.Thread:
        self.metrics.monitor_last_sample.set(time.time())   # started: HeraldLagUnmeasured counts from here
        self._thread = threading.Thread(target=self.run, args=(stop, interval), name="kafka-monitor", daemon=True)
        self._thread.start()
        return self._thread

    def close(self) -> None:
        """After ``stop`` is set: waits for a sample in progress, then closes the census's consumer."""
        if self._thread is not None:
            self._thread.join(3 * self.timeout)
            if self._thread.is_alive():
                return   # stuck on the broker; the process is exiting anyway
        self.census.consumer.close()
