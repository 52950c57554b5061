"""De-duplication claims: one per (event id, channel), held by the Kafka position of the record that made it.

Redis is the fast path (``SET NX GET`` per key, a whole batch in one script);
PostgreSQL's ``dedup`` table is the authority, so a claim survives Redis being
emptied. A claim made by the same record before a crash (same origin) is still
its own. ``release`` gives claims back (a render failure: the DLQ replay must
not be taken for a duplicate).
"""
from __future__ import annotations

from typing import NamedTuple, Protocol

import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from infra.db import pack_all, packed
from infra.settings import Settings
from schemas.vocabulary import Channel
from streams.stages.route.identity import ClaimState, classify_claim
from streams.stores.batch import RedisBatch, Reply, RoundTrips, memory_of, pieces, pipeline_of

# the fast path for a whole batch in one command: SET NX GET per key.
# KEYS: dedup keys; ARGV[1]: ttl; ARGV[i + 1]: the claim origin for KEYS[i]. Returns per key the previous origin or "".
CLAIM_LUA = """
local out = {}
for i = 1, #KEYS do
  local prev = redis.call('SET', KEYS[i], ARGV[i + 1], 'NX', 'GET', 'EX', ARGV[1])
  if prev then out[i] = prev else out[i] = '' end
end
return out
"""

# the columns travel packed (``infra.db.pack``): one string each, not an array dumped element by element
_CLAIMS = f"unnest({packed('eids')}, {packed('chs')}, {packed('origins')})"

CLAIM_SQL = f"""
WITH input AS (
    SELECT * FROM {_CLAIMS} AS t(event_id, channel, origin)
), ins AS (
    INSERT INTO dedup (event_id, channel, origin) SELECT event_id, channel, origin FROM input
    ON CONFLICT DO NOTHING RETURNING event_id, channel
)
SELECT i.event_id, i.channel, (ins.event_id IS NOT NULL OR d.origin = i.origin) AS mine
FROM input i
LEFT JOIN ins ON ins.event_id = i.event_id AND ins.channel = i.channel
LEFT JOIN dedup d ON d.event_id = i.event_id AND d.channel = i.channel
"""

# the common case in one cheaper statement: every claim new. Only the pairs it did not insert (a duplicate, or this
# record's own claim from before a crash) go through CLAIM_SQL, which tells the two apart by origin.
CLAIM_NEW_SQL = f"""
INSERT INTO dedup (event_id, channel, origin) SELECT * FROM {_CLAIMS}
ON CONFLICT DO NOTHING RETURNING event_id, channel
"""

RELEASE_SQL = f"""
DELETE FROM dedup d USING {_CLAIMS} AS t(event_id, channel, origin)
WHERE d.event_id = t.event_id AND d.channel = t.channel AND d.origin = t.origin
"""


class Claim(NamedTuple):   # one per recipient and channel: a NamedTuple builds 4x faster than a frozen dataclass
    event_id: str
    channel: Channel
    origin: str  # streams.stages.route.identity.claim_origin

    @property
    def key(self) -> tuple[str, str]:
        return (self.event_id, self.channel)


class DedupStore(Protocol):
    def queue_claims(self, batch: RedisBatch, claims: list[Claim]) -> Reply[list[ClaimState]]:
        """The fast path: per claim "new" (claimed now), "mine" (by this record before) or "duplicate"."""

    async def authorize(self, claims: list[Claim]) -> set[tuple[str, str]]:
        """The authority, one statement: the (event id, channel) pairs these records hold (now or before a crash)."""

    async def release(self, claims: list[Claim]) -> None:
        """Give claims back in both places (one Redis round trip, one statement); only the holder's own."""


def _columns(claims: list[Claim]) -> dict[str, str]:
    return pack_all({"eids": [c.event_id for c in claims], "chs": [c.channel for c in claims],
                     "origins": [c.origin for c in claims]})


class RedisDedupStore:
    def __init__(self, redis: aioredis.Redis, db: AsyncConnectionPool, settings: Settings) -> None:
        self.redis = redis
        self.db = db
        self.settings = settings

    def _key(self, claim: Claim) -> str:
        return self.settings.rkey("dedup", claim.event_id, claim.channel)

    def queue_claims(self, batch: RedisBatch, claims: list[Claim]) -> Reply[list[ClaimState]]:
        if not claims:
            return Reply.ready([])
        real = pipeline_of(batch)
        cut = pieces(len(claims))   # one script per piece: Redis serves other clients between them
        for piece in cut:
            part = claims[piece.start:piece.stop]
            real.pipe.eval(CLAIM_LUA, len(part), *[self._key(c) for c in part], self.settings.dedup_ttl,
                           *[c.origin for c in part])
        return real.expect(lambda previous: [classify_claim(p, c.origin) for c, p in zip(claims, previous, strict=True)],
                           commands=len(cut))

    async def authorize(self, claims: list[Claim]) -> set[tuple[str, str]]:
        if not claims:
            return set()
        async with self.db.connection() as conn:
            held: set[tuple[str, str]] = set(await (await conn.execute(CLAIM_NEW_SQL, _columns(claims))).fetchall())
            rest = [c for c in claims if c.key not in held]
            if rest:
                rows = await (await conn.execute(CLAIM_SQL, _columns(rest))).fetchall()
                held.update((event_id, channel) for event_id, channel, mine in rows if mine)
        return held

    async def release(self, claims: list[Claim]) -> None:
        if not claims:
            return
        await self.redis.delete(*{self._key(c) for c in claims})
        async with self.db.connection() as conn:
            await conn.execute(RELEASE_SQL, _columns(claims))


class MemoryDedupStore:
    """The twin: ``fast`` stands for Redis (``fast.clear()`` empties it), ``authority`` for the table."""

    def __init__(self, trips: RoundTrips | None = None) -> None:
        self.fast: dict[tuple[str, str], str] = {}
        self.authority: dict[tuple[str, str], str] = {}
        self.trips = trips or RoundTrips()

    def queue_claims(self, batch: RedisBatch, claims: list[Claim]) -> Reply[list[ClaimState]]:
        if not claims:
            return Reply.ready([])

        def run() -> list[ClaimState]:
            out = []
            for c in claims:
                previous = self.fast.get(c.key)
                if previous is None:
                    self.fast[c.key] = c.origin
                out.append(classify_claim(previous, c.origin))
            return out
        return memory_of(batch).call(run)

    async def authorize(self, claims: list[Claim]) -> set[tuple[str, str]]:
        if not claims:
            return set()
        self.trips.sql += 1
        return {c.key for c in claims if self.authority.setdefault(c.key, c.origin) == c.origin}

    async def release(self, claims: list[Claim]) -> None:
        if not claims:
            return
        self.trips.redis += 1
        self.trips.sql += 1
        for c in claims:
            self.fast.pop(c.key, None)
            if self.authority.get(c.key) == c.origin:
                del self.authority[c.key]
