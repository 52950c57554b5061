"""Which campaigns are canceled: ``campaigns.canceled_at``, read once per batch for the campaign ids in it.

``CancelStore.canceled(ids)`` answers from a per-id cache younger than
``ttl`` seconds (HERALD_CAMPAIGN__CANCEL_CACHE_SECONDS) and reads the rest in
one statement; a batch without campaign records costs nothing. A cancel is
acknowledged only after ``ttl`` (``producers.campaign_run.wait_for_workers``), so
no worker acts on a view older than the cancel after that. Where the rows come
from is a ``CampaignRows``: PostgreSQL or the in-memory twin.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Protocol

from psycopg_pool import AsyncConnectionPool

from streams.stores.batch import RoundTrips

CANCELED_SQL = "SELECT id FROM campaigns WHERE id = ANY(%s::text[]) AND canceled_at IS NOT NULL"


class CampaignRows(Protocol):
    async def canceled(self, ids: list[str]) -> set[str]:
        """One statement: which of ``ids`` are canceled."""


class PostgresCampaignRows:
    def __init__(self, db: AsyncConnectionPool) -> None:
        self.db = db

    async def canceled(self, ids: list[str]) -> set[str]:
        async with self.db.connection() as conn:
            rows = await (await conn.execute(CANCELED_SQL, (ids,))).fetchall()
        return {r[0] for r in rows}


class MemoryCampaignRows:
    """The twin: ``cancel(id)`` marks a campaign canceled."""

    def __init__(self, trips: RoundTrips | None = None) -> None:
        self.ids: set[str] = set()
        self.trips = trips or RoundTrips()

    def cancel(self, campaign_id: str) -> None:
        self.ids.add(campaign_id)

    async def canceled(self, ids: list[str]) -> set[str]:
        self.trips.sql += 1
        return self.ids & set(ids)


class CancelStore:
    """Canceled campaigns by id, each answer trusted ``ttl`` seconds (a canceled one forever: a cancel is final)."""

    def __init__(self, rows: CampaignRows, ttl: float = 1.0, max_items: int = 10_000) -> None:
        self.rows = rows
        self.ttl = ttl
        self.max_items = max_items
        self._seen: dict[str, float] = {}   # live campaign id → when it was read
        self._canceled: set[str] = set()

    async def canceled(self, ids: Iterable[str | None], now: float | None = None) -> set[str]:
        wanted = {i for i in ids if i}
        if not wanted:
            return set()
        now = time.monotonic() if now is None else now
        stale = sorted(i for i in wanted - self._canceled if now - self._seen.get(i, -1e18) >= self.ttl)
        if stale:
            found = await self.rows.canceled(stale)
            if len(self._seen) >= self.max_items:
                self._seen.clear()
            for i in stale:
                if i in found:
                    self._canceled.add(i)
                    self._seen.pop(i, None)
                else:
                    self._seen[i] = now
        return wanted & self._canceled
