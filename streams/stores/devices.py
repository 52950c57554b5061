"""Device-token bookkeeping in PostgreSQL: deactivation after provider results, and the 30-day clean-up.

``cleanup_inactive_devices`` is what ``herald devices cleanup`` runs and what
the scheduler may call periodically (sync or async connection).
"""
from __future__ import annotations

import psycopg

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
"""

CLEANUP = """
DELETE FROM devices
WHERE (NOT active AND deactivated_at < now() - make_interval(days => %(days)s))
   OR last_seen_at < now() - make_interval(days => %(days)s)
"""


async def apply_device_effects(conn: psycopg.AsyncConnection, effects: list[tuple[str, str, int]], limit: int) -> None:
    if not effects:
        return
    tokens, kinds, ns = (list(x) for x in zip(*effects, strict=True))
    await conn.execute(APPLY_EFFECTS, {"tokens": tokens, "kinds": kinds, "ns": ns, "limit": limit})


def cleanup_inactive_devices(conn: psycopg.Connection, days: int = 30) -> int:
    """Delete devices deactivated, or not seen, for ``days`` days; returns how many."""
    return conn.execute(CLEANUP, {"days": days}).rowcount


async def cleanup_inactive_devices_async(conn: psycopg.AsyncConnection, days: int = 30) -> int:
    cur = await conn.execute(CLEANUP, {"days": days})
    return cur.rowcount
