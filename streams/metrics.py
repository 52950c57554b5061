"""Prometheus metrics of a worker process, in a registry of their own (nothing registers at import)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events_in = Counter("herald_events_in", "Records read by the agents", ["topic"], registry=r)
        self.stage_outcomes = Counter(
            "herald_stage_outcomes", "Per-stage outcomes by reason", ["stage", "outcome", "reason"], registry=r
        )
        self.deliveries = Counter(
            "herald_deliveries", "Deliveries by channel, provider and outcome", ["channel", "provider", "outcome"], registry=r
        )
        self.provider_latency = Histogram(
            "herald_provider_call_seconds", "Provider call latency", ["provider"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.retries = Counter("herald_retries", "Deliveries sent to a retry tier", ["tier"], registry=r)
        self.dead_letters = Counter("herald_dead_letters", "Dead letters by stage and reason", ["stage", "reason"], registry=r)
        self.e2e_latency = Histogram(
            "herald_end_to_end_seconds", "Event time to provider acceptance", ["channel", "lane"], buckets=_LATENCY_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram("herald_batch_seconds", "Time to process one agent batch", ["agent"], registry=r)
        self.batch_retries = Counter("herald_batch_retries", "Batches retried after an infrastructure error", ["agent", "error"], registry=r)
        self.last_commit = Gauge("herald_last_batch_done_timestamp", "Unix time an agent last finished a batch", ["agent"], registry=r)
        self.circuit_state = Gauge("herald_circuit_state", "Circuit state per provider account: 0 closed, 1 half-open, 2 open", ["provider"], registry=r)
        self.consumer_lag = Gauge("herald_consumer_lag", "Records behind the log end", ["topic"], registry=r)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        if port:
            start_http_server(port, addr=addr, registry=self.registry)
