"""Digest windows and their items (migration 017): ``collect`` adds events to each key's open window, ``close``
ends windows and reads what they hold. ``PostgresDigestStore`` owns the SQL; ``MemoryDigestStore`` is its twin.

Exactly one digest per window: an item is in one window only (primary key digest key + event id, so an event
collected again after a crash stays where it is); a writer holds the open window FOR SHARE while it adds, and the
closer's UPDATE waits for it, so a window is read only when nothing more can join it. The closing record is a
scheduled row per window (its dedup key), and the digest's event id names the window, so a close handled twice is a
duplicate for the route's de-duplication.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from psycopg_pool import AsyncConnectionPool

from streams.stages.route.digest import Collected
from streams.stores.batch import RoundTrips

OPEN_WINDOWS = """
INSERT INTO digest_windows (digest_key, user_id, closes_at)
SELECT k, u, now() + make_interval(secs => s) FROM unnest(%s::text[], %s::text[], %s::int[]) AS t(k, u, s)
ON CONFLICT (digest_key) WHERE closed_at IS NULL DO NOTHING
"""
HOLD_OPEN = """
SELECT id, digest_key, closes_at FROM digest_windows WHERE digest_key = ANY(%s) AND closed_at IS NULL FOR SHARE
"""
ADD_ITEMS = """
INSERT INTO digest_items (digest_key, event_id, window_id, occurred_at, cancellation_key, variables)
SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::timestamptz[], %s::text[], %s::jsonb[])
ON CONFLICT (digest_key, event_id) DO NOTHING
"""
CLOSE = "UPDATE digest_windows SET closed_at = COALESCE(closed_at, now()) WHERE id = ANY(%s)"
ITEMS_OF = """
SELECT window_id, event_id, occurred_at, cancellation_key, variables FROM digest_items
WHERE window_id = ANY(%s) ORDER BY window_id, occurred_at, event_id
"""
MAX_OPEN_TRIES = 5   # a window closed between opening and holding it: open the next one (bounded)


@dataclass(frozen=True, slots=True)
class DigestItem:
    digest_key: str
    event_id: str
    user_id: str
    window_seconds: int
    occurred_ms: int
    cancellation_key: str | None
    variables: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OpenWindow:
    window_id: int
    closes_ms: int


class DigestStore(Protocol):
    async def collect(self, items: Sequence[DigestItem]) -> dict[str, OpenWindow]:
        """Add each item to its key's open window (opened now if none); the windows the items' keys hold, by key.
        An item already collected stays in the window it joined first."""
        ...

    async def close(self, window_ids: Sequence[int]) -> dict[int, list[Collected]]:
        """Close the windows (again is harmless) and return their items, oldest first."""
        ...


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class PostgresDigestStore:
    def __init__(self, db: AsyncConnectionPool) -> None:
        self.db = db

    async def collect(self, items: Sequence[DigestItem]) -> dict[str, OpenWindow]:
        if not items:
            return {}
        first = {item.digest_key: item for item in reversed(items)}   # per key, its first item names user and window
        held: dict[str, OpenWindow] = {}
        async with self.db.connection() as conn, conn.transaction():
            for _ in range(MAX_OPEN_TRIES):
                missing = [first[k] for k in first if k not in held]
                if not missing:
                    break
                await conn.execute(OPEN_WINDOWS, ([i.digest_key for i in missing], [i.user_id for i in missing],
                                                  [i.window_seconds for i in missing]))
                rows = await (await conn.execute(HOLD_OPEN, ([i.digest_key for i in missing],))).fetchall()
                held.update((key, OpenWindow(wid, _ms(closes))) for wid, key, closes in rows)
            if len(held) < len(first):   # a ConnectionError: the runner retries the batch
                raise ConnectionError(f"digest windows kept closing under {len(first) - len(held)} key(s)")
            await conn.execute(ADD_ITEMS, (
                [i.digest_key for i in items], [i.event_id for i in items], [held[i.digest_key].window_id for i in items],
                [datetime.fromtimestamp(i.occurred_ms / 1000, UTC) for i in items], [i.cancellation_key for i in items],
                [json.dumps(i.variables, default=str) for i in items]))
        return held

    async def close(self, window_ids: Sequence[int]) -> dict[int, list[Collected]]:
        if not window_ids:
            return {}
        out: dict[int, list[Collected]] = {wid: [] for wid in window_ids}
        async with self.db.connection() as conn, conn.transaction():
            await conn.execute(CLOSE, (list(window_ids),))
            rows = await (await conn.execute(ITEMS_OF, (list(window_ids),))).fetchall()
        for wid, event_id, occurred, key, variables in rows:
            out[wid].append(Collected(event_id, _ms(occurred), key, variables))
        return out


@dataclass
class _Window:
    digest_key: str
    closes_ms: int
    closed: bool = False
    items: list[Collected] = field(default_factory=list)


class MemoryDigestStore:
    """The twin: ``clock_ms`` stands for the database's now()."""

    def __init__(self, trips: RoundTrips | None = None) -> None:
        self.windows: dict[int, _Window] = {}
        self.item_window: dict[tuple[str, str], int] = {}
        self.trips = trips or RoundTrips()

    def open_window(self, key: str) -> int | None:
        return next((wid for wid, w in self.windows.items() if w.digest_key == key and not w.closed), None)

    async def collect(self, items: Sequence[DigestItem]) -> dict[str, OpenWindow]:
        if not items:
            return {}
        self.trips.sql += 1
        now = int(datetime.now(UTC).timestamp() * 1000)
        held: dict[str, OpenWindow] = {}
        for item in items:
            wid = self.open_window(item.digest_key)
            if wid is None:
                wid = len(self.windows) + 1
                self.windows[wid] = _Window(item.digest_key, now + item.window_seconds * 1000)
            held[item.digest_key] = OpenWindow(wid, self.windows[wid].closes_ms)
        for item in items:
            if (item.digest_key, item.event_id) in self.item_window:
                continue
            wid = held[item.digest_key].window_id
            self.item_window[(item.digest_key, item.event_id)] = wid
            self.windows[wid].items.append(Collected(item.event_id, item.occurred_ms, item.cancellation_key,
                                                     json.loads(json.dumps(item.variables, default=str))))
        return held

    async def close(self, window_ids: Sequence[int]) -> dict[int, list[Collected]]:
        if not window_ids:
            return {}
        self.trips.sql += 1
        out: dict[int, list[Collected]] = {}
        for wid in window_ids:
            window = self.windows.get(wid)
            if window is not None:
                window.closed = True
            out[wid] = sorted(window.items, key=lambda c: (c.occurred_ms, c.event_id)) if window else []
        return out
