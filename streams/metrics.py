"""Prometheus metrics of a worker process, in a registry of their own (nothing registers at import)."""
from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# (HTTP status, body) of a liveness probe
Health = Callable[[], tuple[int, str]]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


def observe_many(histogram: Histogram, amount: float, n: int) -> None:
    """``n`` observations of ``amount`` at once: what ``n`` calls of ``observe`` add, with two increments.

    prometheus_client has no such call; this reads the histogram child's own fields (``_sum``, ``_upper_bounds``,
    ``_buckets``), and tests/unit/test_metrics_observe_many.py compares both ways' exposition, so a release that
    renames them fails there.
    """
    if n <= 0:
        return
    if n == 1:
        histogram.observe(amount)
        return
    histogram._sum.inc(amount * n)  # noqa: SLF001
    for bucket, bound in zip(histogram._buckets, histogram._upper_bounds, strict=True):  # noqa: SLF001
        if amount <= bound:
            bucket.inc(n)
            return


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
        self.circuit_state = Gauge("herald_circuit_state", "Circuit state per provider account: 0 closed, 1 half-open, 2 open",
                                   ["provider"], registry=r)

    def serve(self, port: int, addr: str = "127.0.0.1", health: Health | None = None) -> ThreadingHTTPServer | None:
        return serve_probes(port, addr, self.registry, health)


def serve_probes(port: int, addr: str, registry: CollectorRegistry, health: Health | None = None) -> ThreadingHTTPServer | None:
    """``/metrics`` (Prometheus) and ``/healthz`` (liveness) on one port, from a daemon thread; port 0: nothing.

    prometheus_client's own server answers every path with the metrics, so it cannot serve a probe beside them.
    """
    if not port:
        return None

    class Probes(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                code, body, ctype = 200, generate_latest(registry), CONTENT_TYPE_LATEST
            elif path == "/healthz":
                code, text = health() if health is not None else (200, "ok\n")
                body, ctype = text.encode(), "text/plain; charset=utf-8"
            else:
                code, body, ctype = 404, b"not found: /metrics or /healthz\n", "text/plain; charset=utf-8"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - a scrape every 15 s is not news
            pass

    server = ThreadingHTTPServer((addr, port), Probes)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=f"probes-{port}", daemon=True).start()
    return server
