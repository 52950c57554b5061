"""The circuit breaker's state, shared by every worker of a provider account.

The transitions are the pure functions of ``streams.stages.deliver``; a store
only loads and stores them. ``RedisCircuit`` keeps the state in Redis
(optimistic WATCH/MULTI, so two workers updating at once never lose a
transition); ``MemoryCircuit`` is its in-process twin for tests.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import WatchError

from infra.settings import Settings
from streams.stages.deliver import Breaker

Change = Callable[[Breaker], Breaker]


class Circuit(Protocol):
    async def load(self) -> Breaker:
        """The current state (closed when none is stored)."""
        ...

    async def update(self, change: Change) -> Breaker:
        """Apply ``change`` atomically against concurrent workers; returns the stored state."""
        ...


def circuit_key(settings: Settings, provider: str) -> str:
    return settings.rkey("circuit", provider)


def _parse(raw: bytes | str | None) -> Breaker:
    if not raw:
        return Breaker()
    try:
        return Breaker(**json.loads(raw))
    except (ValueError, TypeError):
        return Breaker()  # unreadable state: start closed rather than block the provider


class RedisCircuit:
    def __init__(self, redis: aioredis.Redis, key: str) -> None:
        self.redis = redis
        self.key = key

    @classmethod
    def for_provider(cls, redis: aioredis.Redis, settings: Settings, provider: str) -> RedisCircuit:
        return cls(redis, circuit_key(settings, provider))

    async def load(self) -> Breaker:
        return _parse(await self.redis.get(self.key))

    async def update(self, change: Change) -> Breaker:
        for _ in range(20):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(self.key)
                    before = _parse(await pipe.get(self.key))
                    after = change(before)
                    if after == before:
                        await pipe.unwatch()
                        return after
                    pipe.multi()
                    pipe.set(self.key, json.dumps(asdict(after)), ex=7 * 24 * 3600)
                    await pipe.execute()
                    return after
                except WatchError:
                    continue
        raise ConnectionError(f"circuit {self.key}: too much contention updating the state")


class MemoryCircuit:
    """One process's breaker; ``reachable = False`` makes every call fail as Redis down would."""

    def __init__(self, state: Breaker | None = None) -> None:
        self.state = state or Breaker()
        self.reachable = True

    async def load(self) -> Breaker:
        self._check()
        return self.state

    async def update(self, change: Change) -> Breaker:
        self._check()
        self.state = change(self.state)
        return self.state

    def _check(self) -> None:
        if not self.reachable:
            raise ConnectionError("memory circuit: unreachable")
