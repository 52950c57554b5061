"""Device-token bookkeeping: deactivation after provider results, and the 30-day clean-up.

``Devices`` is what the deliver handler needs: ``PostgresDevices`` writes the
``devices`` table, ``MemoryDevices`` is its in-process twin for tests.
``cleanup_inactive_devices`` is what ``herald devices cleanup`` runs and what
the scheduler may call periodically (sync or async connection).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import psycopg
from psycopg_pool import AsyncConnectionPool

from streams.stages.deliver import DeviceEffect

# u.kind: ok (reset the count), temp (n more temporary failures), gone (unregistered: deactivate now)
APPLY_EFFECTS = """
UPDATE devices d SET
    temp_failures = CASE WHEN u.kind = 'temp' THEN d.temp_failures + u.n ELSE 0 END,
    active = CASE WHEN u.kind = 'gone' OR (u.kind = 'temp' AND d.temp_failures + u.n >= %(limit)s)
                  THEN false ELSE d.active END,
    deactivated_at = CASE WHEN d.active AND (u.kind = 'gone' OR (u.kind = 'temp' AND d.temp_failures + u.n >= %(limit)s))
                          THEN now() ELSE d.deactivated_at END,
    deactivated_reason = CASE
        WHEN d.active AND u.kind = 'gone' THEN 'unregistered'
        WHEN d.active AND u.kind = 'temp' AND d.temp_failures + u.n >= %(limit)s THEN 'temporary_failures'
        ELSE d.deactivated_reason END
FROM unnest(%(tokens)s::text[], %(kinds)s::text[], %(ns)s::int[]) AS u(token, kind, n)
WHERE d.token = u.token
RETURNING d.user_id, NOT d.active AND d.deactivated_at = now()
"""

CLEANUP = """
DELETE FROM devices
WHERE (NOT active AND deactivated_at < now() - make_interval(days => %(days)s))
   OR last_seen_at < now() - make_interval(days => %(days)s)
"""

Effect = tuple[str, DeviceEffect, int]   # (token, kind, temporary failures more), from stages.deliver.device_effects


# told the users whose device was just deactivated: their cached recipient still lists the token and must go
OnDeactivated = Callable[[list[str]], Awaitable[None]]


class Devices(Protocol):
    async def apply(self, effects: Sequence[Effect]) -> None:
        """Reset, count or deactivate each token; the store's ``limit`` of temporary failures in a row deactivates it.
        The owners of the devices it deactivates are handed to ``on_deactivated``."""
        ...


class PostgresDevices:
    def __init__(self, db: AsyncConnectionPool, limit: int, on_deactivated: OnDeactivated | None = None) -> None:
        self.db = db
        self.limit = limit
        self.on_deactivated = on_deactivated

    async def apply(self, effects: Sequence[Effect]) -> None:
        if not effects:
            return
        async with self.db.connection() as conn:
            users = await apply_device_effects(conn, list(effects), self.limit)
        if users and self.on_deactivated is not None:
            await self.on_deactivated(users)


@dataclass
class Device:
    user_id: str = "u-1"
    active: bool = True
    temp_failures: int = 0
    deactivated_reason: str | None = None


class MemoryDevices:
    """Known tokens only, as the SQL updates only rows that exist (``add`` them first)."""

    def __init__(self, limit: int, on_deactivated: OnDeactivated | None = None) -> None:
        self.limit = limit
        self.on_deactivated = on_deactivated
        self.tokens: dict[str, Device] = {}

    def add(self, token: str, user_id: str = "u-1") -> Device:
        return self.tokens.setdefault(token, Device(user_id=user_id))

    async def apply(self, effects: Sequence[Effect]) -> None:
        users: list[str] = []
        for token, kind, n in effects:
            device = self.tokens.get(token)
            if device is None:
                continue
            if kind == "temp":
                device.temp_failures += n
            else:
                device.temp_failures = 0
            deactivate = kind == "gone" or (kind == "temp" and device.temp_failures >= self.limit)
            if deactivate and device.active:
                device.active = False
                device.deactivated_reason = "unregistered" if kind == "gone" else "temporary_failures"
                users.append(device.user_id)
        if users and self.on_deactivated is not None:
            await self.on_deactivated(sorted(set(users)))


async def apply_device_effects(conn: psycopg.AsyncConnection, effects: list[Effect], limit: int) -> list[str]:
    """Apply the effects; returns the users (sorted, once each) whose device this deactivated."""
    if not effects:
        return []
    tokens, kinds, ns = (list(x) for x in zip(*effects, strict=True))
    rows = await (await conn.execute(APPLY_EFFECTS, {"tokens": tokens, "kinds": kinds, "ns": ns, "limit": limit})).fetchall()
    return sorted({user for user, deactivated in rows if deactivated})


def cleanup_inactive_devices(conn: psycopg.Connection, days: int = 30) -> int:
    """Delete devices deactivated, or not seen, for ``days`` days; returns how many."""
    return conn.execute(CLEANUP, {"days": days}).rowcount


async def cleanup_inactive_devices_async(conn: psycopg.AsyncConnection, days: int = 30) -> int:
    cur = await conn.execute(CLEANUP, {"days": days})
    return cur.rowcount
