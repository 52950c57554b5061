"""Request-rate limit per API key: a fixed window counter in Redis, one round trip per request."""
from __future__ import annotations

import math
from dataclasses import dataclass

import redis.asyncio as aioredis


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # seconds until the window resets (0 when allowed)


def decide(count: int, limit: int, pttl_ms: int, window: int) -> Verdict:
    """``count`` requests seen in the current window (this one included) whose key expires in ``pttl_ms``."""
    remaining = max(limit - count, 0)
    if count <= limit:
        return Verdict(True, limit, remaining, 0)
    # a key without expiry (pttl < 0) should not exist; wait a whole window rather than 0 s
    wait = math.ceil(pttl_ms / 1000) if pttl_ms > 0 else window
    return Verdict(False, limit, 0, max(wait, 1))


async def hit(redis: aioredis.Redis, key: str, limit: int, window: int) -> Verdict:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(key, 0, ex=window, nx=True)
        pipe.incr(key)
        pipe.pttl(key)
        _, count, pttl = await pipe.execute()
    return decide(int(count), limit, int(pttl), window)
