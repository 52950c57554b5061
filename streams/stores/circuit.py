"""The circuit breaker's state in Redis, shared by every worker of a provider account.

The transitions are the pure functions of ``streams.stages.deliver``; this
module only loads and stores them (optimistic WATCH/MULTI, so two workers
updating at once never lose a transition) and exports the state as a metric.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from infra.settings import Settings
from streams.metrics import Metrics
from streams.stages.deliver import STATE_GAUGE, Breaker


def circuit_key(settings: Settings, provider: str) -> str:
    return settings.rkey("circuit", provider)


def _parse(raw: bytes | None) -> Breaker:
    if not raw:
        return Breaker()
    try:
        return Breaker(**json.loads(raw))
    except (ValueError, TypeError):
        return Breaker()  # unreadable state: start closed rather than block the provider


class CircuitStore:
    def __init__(self, redis: aioredis.Redis, settings: Settings, provider: str, metrics: Metrics) -> None:
        self.redis = redis
        self.key = circuit_key(settings, provider)
        self.provider = provider
        self.metrics = metrics

    async def load(self) -> Breaker:
        b = _parse(await self.redis.get(self.key))
        self._export(b)
        return b

    async def update(self, change: Callable[[Breaker], Breaker]) -> Breaker:
        """Apply ``change`` atomically against concurrent workers; returns the stored state."""
        for _ in range(20):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(self.key)
                    before = _parse(await pipe.get(self.key))
                    after = change(before)
                    if after == before:
                        await pipe.unwatch()
                        self._export(after)
                        return after
                    pipe.multi()
                    pipe.set(self.key, json.dumps(asdict(after)), ex=7 * 24 * 3600)
                    await pipe.execute()
                    self._export(after)
                    return after
                except WatchError:
                    continue
        raise ConnectionError(f"circuit {self.key}: too much contention updating the state")

    def _export(self, b: Breaker) -> None:
        self.metrics.circuit_state.labels(self.provider).set(STATE_GAUGE[b.state])
