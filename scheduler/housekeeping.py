"""Periodic clean-up jobs of the scheduler process; one replica at a time runs them (advisory lock).

Each job takes a psycopg connection (autocommit) and returns how many rows it touched. The retention purges
(scheduler.retention) delete in bounded batches; a failing job is logged and the next one still runs.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg

from infra.db import one_row
from infra.settings import RetentionConfig
from scheduler.retention import TABLES, Kept, drain, purge_sql, window_days
from streams.stores.devices import cleanup_inactive_devices

log = logging.getLogger("herald.scheduler.housekeeping")

_LOCK_ID = 0x48_4B_45_45_50  # "HKEEP": at most one replica cleans at a time

Job = Callable[[psycopg.Connection], int]


def purge(kept: Kept, days: int, batch_rows: int = 10_000, max_batches: int = 100) -> Job:
    """Rows of ``kept``'s table older than ``days`` days go, ``batch_rows`` per DELETE (scheduler.retention)."""
    sql = purge_sql(TABLES[kept])

    def job(conn: psycopg.Connection) -> int:
        return drain(lambda: conn.execute(sql, (days, batch_rows, days)).rowcount, batch_rows, max_batches)

    job.__name__ = f"purge_{kept}"
    return job


def purge_published(keep_days: int = 7, chunk: int = 10_000, max_chunks: int = 100) -> Job:
    """Published outbox rows are kept ``keep_days`` for inspection, then deleted."""
    return purge(Kept.PUBLISHED, keep_days, chunk, max_chunks)


def retention_jobs(retention: RetentionConfig, published_days: int | None = None) -> list[Job]:
    """A purge per table with a window (0 days: kept forever); ``published_days`` overrides the setting."""
    jobs = []
    for kept in Kept:
        days = published_days if kept is Kept.PUBLISHED and published_days is not None else window_days(retention, kept)
        if days > 0:
            jobs.append(purge(kept, days, retention.batch_rows, retention.max_batches))
    return jobs


def stale_devices(days: int = 30) -> Job:
    """Devices deactivated, or not seen, for ``days`` days (the deliver stage's clean-up, run here periodically)."""

    def job(conn: psycopg.Connection) -> int:
        return cleanup_inactive_devices(conn, days)

    job.__name__ = "stale_devices"
    return job


def run_jobs(conn: psycopg.Connection, jobs: list[Job]) -> dict[str, int] | None:
    """Run every job under the housekeeping lock; ``None`` when another replica holds it.

    A failing job is logged and the others still run.
    """
    if not one_row(conn.execute("SELECT pg_try_advisory_lock(%s)", (_LOCK_ID,)).fetchone())[0]:
        return None
    done: dict[str, int] = {}
    try:
        for job in jobs:
            name = getattr(job, "__name__", "job")
            try:
                done[name] = job(conn)
            except psycopg.OperationalError:
                raise
            except Exception:
                log.exception("housekeeping job %s failed", name)
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return done
