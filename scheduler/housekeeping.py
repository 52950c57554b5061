"""Periodic clean-up jobs of the scheduler process; one replica at a time runs them (advisory lock).

Each job takes a psycopg connection (autocommit) and returns how many rows it touched.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg

from infra.db import one_row
from streams.stores.devices import cleanup_inactive_devices

log = logging.getLogger("herald.scheduler.housekeeping")

_LOCK_ID = 0x48_4B_45_45_50  # "HKEEP": at most one replica cleans at a time

# bounded batches: a huge backlog never holds one long transaction
PURGE_PUBLISHED = """
DELETE FROM scheduled WHERE id IN (
    SELECT id FROM scheduled
    WHERE published_at IS NOT NULL AND published_at < now() - make_interval(days => %s)
    LIMIT %s)
"""

Job = Callable[[psycopg.Connection], int]


def purge_published(keep_days: int = 7, chunk: int = 10_000, max_chunks: int = 100) -> Job:
    """Published outbox rows are kept ``keep_days`` for inspection, then deleted."""

    def job(conn: psycopg.Connection) -> int:
        total = 0
        for _ in range(max_chunks):
            n = conn.execute(PURGE_PUBLISHED, (keep_days, chunk)).rowcount
            total += n
            if n < chunk:
                break
        return total

    job.__name__ = "purge_published"
    return job


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
