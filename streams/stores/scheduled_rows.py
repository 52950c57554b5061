"""Rows of the ``scheduled`` table: records to publish later (send_at, quiet hours), one statement per batch.

The scheduler (scheduler/) publishes each row when it is due, its bytes and
headers unchanged, unless a cancel marked it (``canceled_at``, by its
notification id or ``cancellation_key``: producers/cancellations.py). ``dedup_key`` makes a retried batch insert nothing twice.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from psycopg_pool import AsyncConnectionPool

from infra.kafka.records import InRecord
from streams.stores.batch import RoundTrips

SCHEDULE_SQL = """
INSERT INTO scheduled (due_at, topic, key, value, headers, kind, notification_id, dedup_key, cancellation_key)
SELECT due_at, topic, key, value, headers::jsonb, kind, notification_id, dedup_key, cancellation_key
FROM unnest(%s::timestamptz[], %s::text[], %s::bytea[], %s::bytea[], %s::text[], %s::text[], %s::text[], %s::text[],
            %s::text[])
     AS t(due_at, topic, key, value, headers, kind, notification_id, dedup_key, cancellation_key)
ON CONFLICT (dedup_key) DO NOTHING
"""

Kind = Literal["send_at", "quiet_hours", "send_window", "fallback", "digest"]


@dataclass(slots=True)
class ScheduledRow:
    due_ms: int
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    kind: Kind
    notification_id: str
    dedup_key: str
    cancellation_key: str | None = None   # a cancel of this key marks the row canceled (never published)


def row_headers(rec: InRecord) -> dict[str, str]:
    """Headers of a scheduled row: {name: utf-8 value}; the scheduler writes them back unchanged."""
    return {name: (value or b"").decode("utf-8", "replace") for name, value in rec.headers}


class ScheduledRows(Protocol):
    async def insert(self, rows: list[ScheduledRow]) -> None:
        """One statement for all ``rows``; a row whose dedup_key is already there is left alone."""


class PostgresScheduledRows:
    def __init__(self, db: AsyncConnectionPool) -> None:
        self.db = db

    async def insert(self, rows: list[ScheduledRow]) -> None:
        if not rows:
            return
        async with self.db.connection() as conn:
            await conn.execute(SCHEDULE_SQL, (
                [datetime.fromtimestamp(r.due_ms / 1000, UTC) for r in rows],
                [r.topic for r in rows], [r.key for r in rows], [r.value for r in rows],
                [json.dumps(r.headers) for r in rows], [r.kind for r in rows],
                [r.notification_id for r in rows], [r.dedup_key for r in rows], [r.cancellation_key for r in rows],
            ))


class MemoryScheduledRows:
    """The twin: ``rows`` by dedup_key."""

    def __init__(self, trips: RoundTrips | None = None) -> None:
        self.rows: dict[str, ScheduledRow] = {}
        self.trips = trips or RoundTrips()

    async def insert(self, rows: list[ScheduledRow]) -> None:
        if not rows:
            return
        self.trips.sql += 1
        for r in rows:
            self.rows.setdefault(r.dedup_key, r)
