"""Prometheus metrics of a scheduler process, in a registry of their own."""
from __future__ import annotations

from http.server import ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streams.metrics import Health, serve_probes

_LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600)


class SchedulerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.published = Counter("herald_scheduler_published", "Scheduled rows published to Kafka", ["kind"], registry=r)
        self.refused = Counter("herald_scheduler_refused", "Scheduled rows Kafka refused (backed off)", ["reason"], registry=r)
        self.lag = Histogram("herald_scheduler_lag_seconds", "Database time from due_at to claim", ["kind"], buckets=_LAG_BUCKETS, registry=r)
        self.last_tick = Gauge("herald_scheduler_last_tick_timestamp", "Unix time the scheduler last finished a tick", registry=r)
        self.cleaned = Counter("herald_scheduler_cleaned", "Rows removed or changed by housekeeping", ["job"], registry=r)
        # the Kafka monitor (scheduler.monitor): from the broker's offsets and the DLQ topic, not the agents' own reports
        self.consumer_lag = Gauge("herald_consumer_lag", "Records an agent's consumer group has yet to read (broker offsets)",
                                  ["agent", "topic"], registry=r)
        self.dlq_records = Gauge("herald_dlq_records", "Dead letters the DLQ topic holds by stage and reason "
                                 "(a replay that failed again counts once)", ["stage", "reason"], registry=r)
        self.monitor_last_sample = Gauge("herald_kafka_monitor_last_sample_timestamp",
                                         "Unix time the scheduler last sampled consumer lag and the DLQ", registry=r)

    def serve(self, port: int, addr: str = "127.0.0.1", health: Health | None = None) -> ThreadingHTTPServer | None:
        """``/metrics`` and ``/healthz`` on ``addr:port`` (0: off)."""
        return serve_probes(port, addr, self.registry, health)
