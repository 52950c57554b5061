"""The rate-limit script against its in-memory twin: for checks of one to three counters with small limits, over
batches, the same answers (the first full counter names the rule), the same counts (a check counts every counter
or none) and a window on every counter from its first count. Decisions are remembered per event or per campaign
chunk record (a byte per recipient's place): a retried batch, whole or in part, gets its answers again and counts
nothing twice."""
from __future__ import annotations

import asyncio
import random

import pytest
import redis.asyncio as aioredis

from infra.settings import Settings
from streams.stages.route.limits import Counter
from streams.stores.batch import MemoryBatch, PipelineBatch
from streams.stores.ratelimits import MemoryRateLimitStore, RedisRateLimitStore, Remembered

pytestmark = pytest.mark.integration


def _batches(prefix: str, seed: int) -> list[tuple[list[list[Counter]], list[Remembered]]]:
    """Three batches of checks of one to three counters over a few shared keys, with limits from 0 to 3; half of
    each batch are events of their own, half the recipients of a chunk record at scattered places in it."""
    rng = random.Random(seed)
    limits = {f"{prefix}:r{k}": rng.randint(0, 3) for k in range(6)}
    out = []
    event = 0
    for b in range(3):
        checks: list[list[Counter]] = []
        decisions: list[Remembered] = []
        places = sorted(rng.sample(range(300), 20))
        for i in range(40):
            keys = rng.sample(sorted(limits), rng.randint(1, 3))
            checks.append([Counter(k, limits[k], 120, k.rsplit(":", 1)[1]) for k in keys])
            if i % 2:
                decisions.append(Remembered(f"{prefix}-bulk:0:{b}", "email", places[i // 2], chunk=True))
            else:
                decisions.append(Remembered(f"e{event}", "email"))
            event += 1
        out.append((checks, decisions))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_script_answers_and_counts_as_the_twin(settings: Settings, seed: int):
    store, twin = RedisRateLimitStore(settings), MemoryRateLimitStore()
    batches = _batches(store.prefix, seed)

    async def run() -> tuple[list[list[str | None]], dict[str, int], dict[str, int]]:
        client = aioredis.Redis.from_url(settings.redis_dsn)
        try:
            answers = []
            for checks, decisions in batches:
                real, mem = PipelineBatch(client), MemoryBatch()
                got, expected = store.queue_checks(real, checks, decisions), twin.queue_checks(mem, checks, decisions)
                await real.execute()
                await mem.execute()
                assert got.value == expected.value
                answers.append(got.value)
            keys = sorted({c.key for checks, _ in batches for check in checks for c in check})
            counted = await client.mget(keys)
            for (checks, decisions), answered in zip(batches, answers, strict=True):
                # a retry, in part and in another order: the remembered answers, and no count moves
                again = [i for i in range(len(checks)) if i % 3][::-1]
                real = PipelineBatch(client)
                got = store.queue_checks(real, [checks[i] for i in again], [decisions[i] for i in again])
                await real.execute()
                assert got.value == [answered[i] for i in again]
            assert await client.mget(keys) == counted
            keys = sorted({c.key for checks, _ in batches for check in checks for c in check})
            counts = {k: int(v or 0) for k, v in zip(keys, await client.mget(keys), strict=True)}
            ttls = {k: await client.ttl(k) for k in keys}
            return answers, counts, ttls
        finally:
            await client.aclose()

    answers, counts, ttls = asyncio.run(run())
    assert counts == {k: twin.counts.get(k, 0) for k in counts}
    denied = [a for batch in answers for a in batch if a is not None]
    assert denied and len(denied) < sum(len(batch) for batch in answers)   # both outcomes were met
    assert all(0 < ttl <= 120 for ttl in ttls.values() if ttl != -2)       # a counter has its window from the start
