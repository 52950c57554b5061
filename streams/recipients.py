"""Recipients, read cache-aside: Redis (``settings.rkey("recipient", user_id)``, TTL
``settings.recipient_cache_ttl``) in front of PostgreSQL (users, active devices, preferences).

Whoever changes a user, a device or a preference calls ``invalidate_recipient``
after the change commits, so the very next event sees it.
"""
from __future__ import annotations

import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from infra.settings import Settings
from streams.stages.route.recipient import Recipient, from_cache, to_cache

RECIPIENTS_SQL = """
SELECT u.id, u.email, u.phone, u.locale, u.time_zone, u.first_name, u.email_undeliverable, u.phone_undeliverable,
       COALESCE((SELECT array_agg(d.token ORDER BY d.id) FROM devices d WHERE d.user_id = u.id AND d.active), '{}'),
       COALESCE(p.muted, false), COALESCE(p.channels, '{}'::jsonb), COALESCE(p.categories, '{}'::jsonb),
       p.quiet_start, p.quiet_end
FROM users u LEFT JOIN preferences p ON p.user_id = u.id
WHERE u.id = ANY(%s)
"""


def recipient_key(settings: Settings, user_id: str) -> str:
    return settings.rkey("recipient", user_id)


async def invalidate_recipient(redis: aioredis.Redis, settings: Settings, user_id: str) -> None:
    """Drop a user's cached recipient (call after committing any change to the user, devices or preferences)."""
    await redis.delete(recipient_key(settings, user_id))


def recipient_from_row(row: tuple) -> Recipient:
    (uid, email, phone, locale, tz, first_name, email_bad, phone_bad, devices, muted, channels, categories, qs, qe) = row
    return Recipient(
        id=uid, email=email, phone=phone, locale=locale, time_zone=tz, first_name=first_name,
        email_undeliverable=email_bad, phone_undeliverable=phone_bad, devices=list(devices), muted=muted,
        channels={k: bool(v) for k, v in (channels or {}).items()},
        categories={k: bool(v) for k, v in (categories or {}).items()},
        quiet_start=qs, quiet_end=qe,
    )


async def load_recipients(db: AsyncConnectionPool, user_ids: list[str]) -> dict[str, Recipient]:
    """One SELECT for all ``user_ids``; users that do not exist are absent from the result."""
    if not user_ids:
        return {}
    async with db.connection() as conn:
        rows = await (await conn.execute(RECIPIENTS_SQL, (user_ids,))).fetchall()
    return {r[0]: recipient_from_row(r) for r in rows}


def parse_cached(data: bytes | None) -> Recipient | None:
    """A cached entry, or None for a miss or an entry this version cannot read (refetched and overwritten)."""
    if not data:
        return None
    try:
        return from_cache(data)
    except (ValueError, KeyError, TypeError):
        return None


__all__ = ["invalidate_recipient", "load_recipients", "parse_cached", "recipient_key", "to_cache"]
