"""Cancellations by key or by notification id (the ``cancellations`` table), as a worker sees them.

A worker holds every cancellation in memory and, at most once per ``ttl`` seconds
(HERALD_CAMPAIGN__CANCEL_CACHE_SECONDS), reads only the rows whose ``canceled_at`` is newer than the newest it
has seen, minus ``OVERLAP`` (a cancel's transaction that committed after a later one's must not be missed). So a
batch costs nothing unless the view is stale, and then one indexed statement. A cancel is acknowledged after
``ttl`` plus a margin (``producers.cancellations``): no batch started after the acknowledgement works from a view
older than the cancel. A key cancels what occurred at or before its ``canceled_at``; an event with the same key
that occurs later goes on. Where the rows come from is a ``CancellationRows``: PostgreSQL or the in-memory twin.
"""
from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from psycopg_pool import AsyncConnectionPool


class CancelKind(StrEnum):
    KEY = "key"                    # a cancellation_key: what occurred at or before the cancel
    NOTIFICATION = "notification"  # one notification id (DELETE /v1/notifications/{id})


# the status reasons a canceled notification ends with
REASON_BY_KEY = "cancellation key canceled"
REASON_BY_ID = "notification canceled"

OVERLAP = timedelta(seconds=30)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SINCE_SQL = "SELECT kind, key, canceled_at FROM cancellations WHERE canceled_at > %s"

Row = tuple[str, str, datetime]


class CancellationRows(Protocol):
    async def since(self, after: datetime) -> list[Row]:
        """One statement: every cancellation newer than ``after``."""


class PostgresCancellationRows:
    def __init__(self, db: AsyncConnectionPool) -> None:
        self.db = db

    async def since(self, after: datetime) -> list[Row]:
        async with self.db.connection() as conn:
            rows = await (await conn.execute(SINCE_SQL, (after,))).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]


class MemoryCancellationRows:
    """The twin: ``cancel(kind, key)`` records a cancellation now (or ``at``)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], datetime] = {}

    def cancel(self, kind: CancelKind, key: str, at: datetime | None = None) -> None:
        self.rows[(kind, key)] = at or datetime.now(UTC)

    async def since(self, after: datetime) -> list[Row]:
        return [(kind, key, at) for (kind, key), at in self.rows.items() if at > after]


class CancellationView:
    """Every cancellation younger than ``keep_days`` (HERALD_RETENTION__CANCELLATIONS_DAYS, 0: all), refreshed at most
    once per ``ttl`` seconds; ``reason()`` answers from memory."""

    def __init__(self, rows: CancellationRows, ttl: float = 1.0, keep_days: int = 0) -> None:
        self.rows = rows
        self.ttl = ttl
        self.keep = timedelta(days=keep_days)
        self._keys: dict[str, int] = {}   # cancellation key → its latest cancel, epoch ms
        self._ids: dict[str, int] = {}    # notification id → its cancel, epoch ms
        self._newest = EPOCH
        self._read_at = float("-inf")

    async def refresh(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now - self._read_at < self.ttl:
            return
        rows = await self.rows.since(max(EPOCH, self._newest - OVERLAP))
        for kind, key, at in rows:
            ms = int(at.timestamp() * 1000)
            seen = self._ids if kind == CancelKind.NOTIFICATION else self._keys
            seen[key] = max(ms, seen.get(key, ms))
            self._newest = max(self._newest, at)
        if self.keep and rows:   # what housekeeping purges from the table goes from memory too
            horizon = int((datetime.now(UTC) - self.keep).timestamp() * 1000)
            self._ids = {k: ms for k, ms in self._ids.items() if ms >= horizon}
            self._keys = {k: ms for k, ms in self._keys.items() if ms >= horizon}
        self._read_at = now   # the time before the read: the view is at least this fresh

    @property
    def empty(self) -> bool:
        """Nothing is canceled: a batch need not look at each of its notifications."""
        return not self._ids and not self._keys

    def reason(self, notification_id: str, key: str | None, occurred_ms: int) -> str | None:
        """Why this notification is canceled, or None when it is not."""
        if notification_id in self._ids:
            return REASON_BY_ID
        if key is not None and (at := self._keys.get(key)) is not None and occurred_ms <= at:
            return REASON_BY_KEY
        return None
