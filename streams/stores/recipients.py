"""Recipients, read cache-aside: Redis (``settings.rkey("recipient", user_id)``, TTL
``settings.recipient_cache_ttl``) in front of PostgreSQL (users, active devices, preferences).

Whoever changes a user, a device or a preference calls ``invalidate_recipient``
after the change commits, so the very next event sees it.

Cache-aside has a race: a worker reads the old row, the change commits and
the key is deleted, then the worker writes the old row back for a whole TTL.
So ``invalidate_recipient`` also leaves a short-lived marker, and the batch's
cache fill (``queue_fill``) skips users that carry one.

``RecipientStore`` is what the route handler uses (its cache read and fill
queue onto a shared ``RedisBatch``); ``MemoryRecipientStore`` is its twin.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool
from redis.asyncio.client import Pipeline

from infra.settings import Settings
from streams.stages.route.recipient import Recipient, from_cache, to_cache
from streams.stores.batch import RedisBatch, Reply, RoundTrips, memory_of, pieces, pipeline_of

_DEVICES = "(SELECT array_agg(d.token ORDER BY d.id) FROM devices d WHERE d.user_id = u.id AND d.active)"
_RECIPIENTS = """
SELECT u.id, u.email, u.phone, u.locale, u.time_zone, u.first_name, u.email_undeliverable, u.phone_undeliverable,
       {devices},
       COALESCE(p.muted, false), p.channels, p.categories, p.quiet_start, p.quiet_end
FROM users u LEFT JOIN preferences p ON p.user_id = u.id
WHERE u.id = ANY(%b::text[])
"""
RECIPIENTS_SQL = _RECIPIENTS.format(devices=_DEVICES)
# a batch with no push channel (a campaign's email) skips the device look-up, an index probe per user
RECIPIENTS_NO_DEVICES_SQL = _RECIPIENTS.format(devices="NULL::text[]")


# seconds a fill is refused after an invalidation: far longer than one batch's read-then-fill
INVALIDATION_GUARD_SECONDS = 10

# KEYS: cache key, marker key, cache key, marker key...; ARGV[1]: ttl, ARGV[1 + n]: the n-th value
FILL_LUA = """
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    redis.call('SET', KEYS[i], ARGV[(i + 1) / 2 + 1], 'EX', ARGV[1])
  end
end
return 0
"""


def recipient_key(settings: Settings, user_id: str) -> str:
    return settings.rkey("recipient", user_id)


def invalidation_key(settings: Settings, user_id: str) -> str:
    return settings.rkey("recipient-invalidated", user_id)


async def invalidate_recipient(redis: aioredis.Redis, settings: Settings, user_id: str) -> None:
    """Drop a user's cached recipient (call after committing any change to the user, devices or preferences)."""
    await invalidate_recipients(redis, settings, [user_id])


async def invalidate_recipients(redis: aioredis.Redis, settings: Settings, user_ids: list[str]) -> None:
    """``invalidate_recipient`` for several users in one round trip."""
    if not user_ids:
        return
    pipe = redis.pipeline(transaction=True)
    for user_id in user_ids:
        pipe.delete(recipient_key(settings, user_id))
        pipe.set(invalidation_key(settings, user_id), b"1", ex=INVALIDATION_GUARD_SECONDS)
    await pipe.execute()


def queue_fill(pipe: Pipeline, settings: Settings, recipients: list[Recipient]) -> int:
    """Queue the cache fill of freshly read recipients on ``pipe`` (skipping just-invalidated users), in pieces;
    returns how many commands it queued."""
    cut = pieces(len(recipients))
    for piece in cut:
        part = recipients[piece.start:piece.stop]
        keys: list[str] = []
        for r in part:
            keys += [recipient_key(settings, r.id), invalidation_key(settings, r.id)]
        pipe.eval(FILL_LUA, len(keys), *keys, settings.recipient_cache_ttl, *[to_cache(r) for r in part])
    return len(cut)


def recipient_from_row(row: tuple) -> Recipient:
    (uid, email, phone, locale, tz, first_name, email_bad, phone_bad, devices, muted, channels, categories, qs, qe) = row
    # positional, in Recipient's field order: a campaign reads a thousand rows a chunk, and keywords cost more
    return Recipient(uid, email, phone, locale, tz, first_name, email_bad, phone_bad,
                     list(devices) if devices else [], muted,
                     {k: bool(v) for k, v in channels.items()} if channels else {},
                     {k: bool(v) for k, v in categories.items()} if categories else {}, qs, qe)


async def load_recipients(db: AsyncConnectionPool, user_ids: list[str], devices: bool = True) -> dict[str, Recipient]:
    """One SELECT for all ``user_ids``; users that do not exist are absent from the result. ``devices=False``:
    without their push tokens (never to be cached: the cache's entries are whole)."""
    if not user_ids:
        return {}
    async with db.connection() as conn:
        rows = await (await conn.execute(RECIPIENTS_SQL if devices else RECIPIENTS_NO_DEVICES_SQL, (user_ids,))).fetchall()
    return {r[0]: recipient_from_row(r) for r in rows}


def parse_cached(data: bytes | None) -> Recipient | None:
    """A cached entry, or None for a miss or an entry this version cannot read (refetched and overwritten)."""
    if not data:
        return None
    try:
        return from_cache(data)
    except (ValueError, KeyError, TypeError):
        return None


class RecipientStore(Protocol):
    def queue_cached(self, batch: RedisBatch, user_ids: list[str]) -> Reply[dict[str, Recipient]]:
        """The cached recipients of ``user_ids`` (one MGET); a miss or an unreadable entry is absent."""

    async def load(self, user_ids: list[str], devices: bool = True) -> dict[str, Recipient]:
        """One statement for all ``user_ids``; users that do not exist are absent. ``devices=False``: without their
        push tokens, for a batch that sends no push (such recipients are not cached)."""

    def queue_fill(self, batch: RedisBatch, recipients: list[Recipient]) -> None:
        """Cache freshly loaded recipients, skipping users invalidated meanwhile."""

    async def invalidate(self, user_id: str) -> None:
        """After a change to the user, a device or a preference commits."""


class RedisRecipientStore:
    def __init__(self, redis: aioredis.Redis, db: AsyncConnectionPool, settings: Settings) -> None:
        self.redis = redis
        self.db = db
        self.settings = settings

    def queue_cached(self, batch: RedisBatch, user_ids: list[str]) -> Reply[dict[str, Recipient]]:
        if not user_ids:
            return Reply.ready({})
        real = pipeline_of(batch)
        real.pipe.mget([recipient_key(self.settings, u) for u in user_ids])

        def parse(raw: list[bytes | None]) -> dict[str, Recipient]:
            found = {u: parse_cached(r) for u, r in zip(user_ids, raw, strict=True)}
            return {u: r for u, r in found.items() if r is not None}
        return real.expect(parse)

    async def load(self, user_ids: list[str], devices: bool = True) -> dict[str, Recipient]:
        return await load_recipients(self.db, user_ids, devices)

    def queue_fill(self, batch: RedisBatch, recipients: list[Recipient]) -> None:
        real = pipeline_of(batch)
        if queued := queue_fill(real.pipe, self.settings, recipients):
            real.expect(lambda _: None, commands=queued)

    async def invalidate(self, user_id: str) -> None:
        await invalidate_recipient(self.redis, self.settings, user_id)


class MemoryRecipientStore:
    """The twin: ``users`` stands for PostgreSQL, ``cache`` for Redis, ``invalidated`` for the markers.

    Entries are kept in the cache format, so what the real cache could not hold the twin cannot either.
    """

    def __init__(self, users: Iterable[Recipient] = (), trips: RoundTrips | None = None) -> None:
        self.users: dict[str, Recipient] = {r.id: r for r in users}
        self.cache: dict[str, bytes] = {}
        self.invalidated: set[str] = set()
        self.trips = trips or RoundTrips()

    def add(self, recipient: Recipient) -> None:
        """A user written (or changed) in the table; like the API, call ``invalidate`` next."""
        self.users[recipient.id] = recipient

    def queue_cached(self, batch: RedisBatch, user_ids: list[str]) -> Reply[dict[str, Recipient]]:
        if not user_ids:
            return Reply.ready({})

        def run() -> dict[str, Recipient]:
            found = {u: parse_cached(self.cache.get(u)) for u in user_ids}
            return {u: r for u, r in found.items() if r is not None}
        return memory_of(batch).call(run)

    async def load(self, user_ids: list[str], devices: bool = True) -> dict[str, Recipient]:
        if not user_ids:
            return {}
        self.trips.sql += 1
        found = {u: from_cache(to_cache(self.users[u])) for u in user_ids if u in self.users}
        if not devices:
            for r in found.values():
                r.devices = []
        return found

    def queue_fill(self, batch: RedisBatch, recipients: list[Recipient]) -> None:
        if not recipients:
            return

        def run() -> None:
            for r in recipients:
                if r.id not in self.invalidated:
                    self.cache[r.id] = to_cache(r)
        memory_of(batch).call(run)

    async def invalidate(self, user_id: str) -> None:
        self.trips.redis += 1
        self.cache.pop(user_id, None)
        self.invalidated.add(user_id)  # the real marker expires after INVALIDATION_GUARD_SECONDS; the twin's never


__all__ = ["MemoryRecipientStore", "RecipientStore", "RedisRecipientStore", "invalidate_recipient", "load_recipients",
           "parse_cached", "queue_fill", "recipient_key"]
