"""herald scheduler"""
from __future__ import annotations

import signal
import threading

import typer

from infra.settings import Settings
from infra.tools.cli.errors import CliError


def scheduler(
    interval: float = typer.Option(1.0, min=0.05, help="seconds between claims of due rows"),
    batch_size: int = typer.Option(1000, min=1, help="rows claimed per transaction"),
    housekeeping_every: float = typer.Option(3600.0, min=0, help="seconds between clean-up runs (0: off)"),
    keep_published_days: int | None = typer.Option(
        None, min=0, help="days published outbox rows are kept (default: HERALD_RETENTION__PUBLISHED_DAYS; 0: forever)"),
    metrics_port: int = typer.Option(9109, help="Prometheus /metrics and liveness /healthz port (0: off); "
                                     "the address is HERALD_METRICS_HOST"),
    once: bool = typer.Option(False, "--once", help="publish what is due now, then exit"),
    loglevel: str = typer.Option("info", help="log level"),
) -> None:
    """Publish due scheduled sends (send_at, quiet-hours deferrals) to Kafka; clean up periodically.

    Every INTERVAL seconds it claims rows of the `scheduled` table due by the
    database clock (FOR UPDATE SKIP LOCKED, BATCH_SIZE at a time), publishes
    them unchanged and marks them published only after Kafka's delivery
    report. Run several replicas for availability: they never publish the
    same claim twice. Ctrl-C or SIGTERM stops after the current batch.
    Every HERALD_MONITOR_INTERVAL seconds it samples every agent's consumer
    lag and the DLQ's dead letters by reason from the broker (/metrics).
    """
    import logging.config

    import psycopg

    from infra.logs import logging_config
    from scheduler.metrics import SchedulerMetrics
    from scheduler.service import Scheduler, SchedulerConfig

    settings = Settings()
    logging.config.dictConfig(logging_config(loglevel, settings))
    config = SchedulerConfig(interval=interval, batch_size=batch_size, housekeeping_every=housekeeping_every,
                             keep_published_days=keep_published_days)
    metrics = SchedulerMetrics()
    try:
        sched = Scheduler(settings, config, metrics)
        if once:
            n = sched.tick()
            typer.echo(f"published {n} due record(s)")
            sched.close()
            return
    except psycopg.OperationalError as exc:
        raise CliError(f"PostgreSQL at {settings.masked()['database_url']} does not answer ({exc}); start it with `herald stack up`") from exc
    try:
        metrics.serve(metrics_port, settings.metrics_host, sched.health)
    except OSError as exc:
        logging.getLogger("herald.scheduler").warning("metrics port %s:%s: %s; no /metrics or /healthz",
                                                      settings.metrics_host, metrics_port, exc)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    monitor = None
    if settings.monitor_interval:
        from scheduler.monitor import KafkaMonitor
        from streams.runtime.registry import watched

        # every agent's lag from the broker's offsets, and the DLQ by reason (herald_consumer_lag, herald_dlq_records)
        try:
            agents = watched(settings)
        except ValueError as exc:   # HERALD_WORKER__ENGINES names an unknown agent
            raise CliError(str(exc)) from exc
        monitor = KafkaMonitor(settings, agents, metrics)
        monitor.start(stop, settings.monitor_interval)
    logging.getLogger("herald.scheduler").info("scheduler running (every %.2fs, batches of %d)", interval, batch_size)
    try:
        sched.run(stop)
    finally:
        sched.close()
        if monitor is not None:
            monitor.close()
