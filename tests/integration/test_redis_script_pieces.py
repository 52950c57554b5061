"""The stores' Lua scripts go to Redis in pieces: a bulk batch of thousands of recipients no longer holds Redis for
~320 ms in one script (every other client, the interactive lane's and the API's, waited that long), and the pieces,
run in order in one round trip, answer exactly as one script did (their in-memory twins say the same)."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis as sync_redis
import redis.asyncio as aioredis

from infra.settings import Settings
from schemas.vocabulary import Channel
from streams.stages.route.identity import ClaimState
from streams.stages.route.limits import Counter
from streams.stages.route.recipient import Recipient
from streams.stores.batch import SCRIPT_PIECE, MemoryBatch, PipelineBatch
from streams.stores.dedup import Claim, MemoryDedupStore, RedisDedupStore
from streams.stores.ratelimits import MemoryRateLimitStore, RedisRateLimitStore, Remembered
from streams.stores.recipients import RedisRecipientStore

pytestmark = pytest.mark.integration

N = 2 * SCRIPT_PIECE + SCRIPT_PIECE // 2   # three pieces


def evals(settings: Settings) -> int:
    stats = sync_redis.Redis.from_url(settings.redis_dsn).info("commandstats")
    return int(stats.get("cmdstat_eval", {}).get("calls", 0))


def on_redis(settings: Settings, run: Callable[[aioredis.Redis], Awaitable[Any]]) -> Any:
    async def session() -> Any:
        client = aioredis.Redis.from_url(settings.redis_dsn)
        try:
            return await run(client)
        finally:
            await client.aclose()
    return asyncio.run(session())


def test_rate_limit_checks_count_across_pieces_as_one_script_would(settings: Settings):
    store, twin = RedisRateLimitStore(settings), MemoryRateLimitStore()
    users = SCRIPT_PIECE + 200   # a user's second check falls in a later piece than its first
    checks = [[Counter(f"{store.prefix}:cap:u{i % users}", 1, 60, "one_a_day")] for i in range(N)]
    decisions = [Remembered(f"e{i}", "email") if i % 2 else Remembered("bulk:0:1", "email", i, chunk=True)
                 for i in range(N)]

    async def check(client: aioredis.Redis) -> list[str | None]:
        batch = PipelineBatch(client)
        reply = store.queue_checks(batch, checks, decisions)
        await batch.execute()
        return reply.value

    async def check_twin() -> list[str | None]:
        batch = MemoryBatch()
        reply = twin.queue_checks(batch, checks, decisions)
        await batch.execute()
        return reply.value

    before = evals(settings)
    got = on_redis(settings, check)
    assert evals(settings) - before == 3
    assert got == asyncio.run(check_twin())
    assert got == [None] * users + ["one_a_day"] * (N - users)
    assert on_redis(settings, check) == got   # the same batch again (a retry): remembered, not counted twice


def test_dedup_claims_in_pieces_keep_their_order(settings: Settings):
    store, twin = RedisDedupStore(None, None, settings), MemoryDedupStore()   # type: ignore[arg-type]  # no SQL here
    claims = [Claim(f"ev-{i}", Channel.EMAIL, "bulk:0:1") for i in range(N)]
    others = [Claim(c.event_id, c.channel, "bulk:0:2") if i % 2 else c for i, c in enumerate(claims)]

    async def claim(client: aioredis.Redis, these: list[Claim]) -> list[ClaimState]:
        store.redis = client
        batch = PipelineBatch(client)
        reply = store.queue_claims(batch, these)
        await batch.execute()
        return reply.value

    async def claim_twin(these: list[Claim]) -> list[ClaimState]:
        batch = MemoryBatch()
        reply = twin.queue_claims(batch, these)
        await batch.execute()
        return reply.value

    assert on_redis(settings, lambda c: claim(c, claims)) == ["new"] * N == asyncio.run(claim_twin(claims))
    again = on_redis(settings, lambda c: claim(c, others))
    assert again == ["mine" if i % 2 == 0 else "duplicate" for i in range(N)] == asyncio.run(claim_twin(others))


def test_a_large_cache_fill_is_read_back_whole(settings: Settings):
    store = RedisRecipientStore(None, None, settings)   # type: ignore[arg-type]  # the cache only
    people = [Recipient(id=f"p{i}", email=f"p{i}@example.test", locale="de") for i in range(N)]

    async def fill_and_read(client: aioredis.Redis) -> dict[str, Recipient]:
        store.redis = client
        batch = PipelineBatch(client)
        store.queue_fill(batch, people)
        await batch.execute()
        batch = PipelineBatch(client)
        reply = store.queue_cached(batch, [p.id for p in people])
        await batch.execute()
        return reply.value

    before = evals(settings)
    cached = on_redis(settings, fill_and_read)
    assert evals(settings) - before == 3
    assert cached == {p.id: p for p in people}
