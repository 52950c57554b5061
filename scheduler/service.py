"""The scheduler process: every ``interval`` seconds drain the due outbox rows and publish the due occurrences of
recurring schedules (scheduler/recurring.py); now and then run housekeeping.

Several replicas may run: claims use ``FOR UPDATE SKIP LOCKED`` and
housekeeping an advisory lock. PostgreSQL or Kafka being down is logged and
retried with backoff; the loop never dies of it.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import psycopg

from infra.settings import Settings
from scheduler.housekeeping import Job, retention_jobs, run_jobs, stale_devices
from scheduler.metrics import SchedulerMetrics
from scheduler.outbox import Outbox
from scheduler.recurring import Recurring

log = logging.getLogger("herald.scheduler")


@dataclass(frozen=True)
class SchedulerConfig:
    interval: float = 1.0               # seconds between ticks
    batch_size: int = 1000              # rows per claim (one transaction)
    housekeeping_every: float = 3600.0  # seconds; 0 turns housekeeping off
    keep_published_days: int | None = None  # None: settings.retention.published_days
    device_inactive_days: int = 30
    delivery_timeout: float = 30.0
    stall_seconds: float = 120.0        # /healthz: 503 when the loop has not come round for this long


def default_jobs(config: SchedulerConfig, settings: Settings) -> list[Job]:
    """The retention purges (``settings.retention``), then the stale devices."""
    return [*retention_jobs(settings.retention, config.keep_published_days), stale_devices(config.device_inactive_days)]


class Scheduler:
    def __init__(self, settings: Settings, config: SchedulerConfig | None = None, metrics: SchedulerMetrics | None = None,
                 jobs: list[Job] | None = None) -> None:
        self.settings = settings
        self.config = config or SchedulerConfig()
        self.metrics = metrics or SchedulerMetrics()
        self.jobs = default_jobs(self.config, settings) if jobs is None else jobs
        self.outbox = Outbox(settings.dsn, settings, batch_size=self.config.batch_size,
                             delivery_timeout=self.config.delivery_timeout, metrics=self.metrics)
        self.recurring = Recurring(settings, self.metrics, batch_size=self.config.batch_size,
                                   delivery_timeout=self.config.delivery_timeout)
        self.published = 0
        # the loop's last turn (a tick or a backed-off failure): a hung claim or publish stops it
        self.last_turn = time.monotonic()

    def health(self) -> tuple[int, str]:
        """(HTTP status, body) for ``/healthz``: alive while the loop keeps turning, PostgreSQL up or not."""
        idle = time.monotonic() - self.last_turn
        if idle > self.config.stall_seconds:
            return 503, f"stalled: the scheduler loop has not turned for {idle:.0f} s\n"
        return 200, "ok\n"

    def tick(self) -> int:
        r = self.outbox.drain()
        self.published += r.published
        occurrences = self.recurring.tick()
        self.published += occurrences
        if occurrences:
            log.info("published %d recurring occurrences", occurrences)
        if r.refused or r.transient:
            log.warning("published %d, refused %d (backed off), left due %d: %s", r.published, r.refused, r.transient,
                        "; ".join(r.errors[:3]))
        elif r.published:
            log.info("published %d scheduled records", r.published)
        self.metrics.last_tick.set(time.time())
        return r.published + occurrences

    def housekeeping(self) -> dict[str, int] | None:
        with psycopg.connect(self.settings.dsn, autocommit=True, connect_timeout=10) as conn:
            done = run_jobs(conn, self.jobs)
        for job, n in (done or {}).items():
            self.metrics.cleaned.labels(job).inc(n)
            if n:
                log.info("housekeeping %s: %d rows", job, n)
        return done

    def run(self, stop: threading.Event) -> None:
        """Tick until ``stop`` is set. Infrastructure errors back off (up to 10 s) and never end the loop."""
        backoff = self.config.interval
        next_housekeeping = time.monotonic() + min(60.0, self.config.housekeeping_every)
        while not stop.is_set():
            started = self.last_turn = time.monotonic()
            try:
                self.tick()
                if self.config.housekeeping_every and started >= next_housekeeping:
                    self.housekeeping()
                    next_housekeeping = started + self.config.housekeeping_every
                backoff = self.config.interval
            except psycopg.OperationalError as exc:
                log.warning("PostgreSQL unavailable (%s); retrying in %.1fs", str(exc).strip().splitlines()[0], backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            stop.wait(max(0.0, self.config.interval - (time.monotonic() - started)))

    def close(self) -> None:
        self.outbox.close()
        self.recurring.close()
