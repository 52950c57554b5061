"""One Redis round trip shared by several stores.

A handler opens a batch, each store queues its commands onto it and gets a
``Reply`` back, the handler runs the batch once, then reads the replies. So
the handler's round-trip budget does not depend on how many stores it asks.

``PipelineBatch`` is the real one (a non-transactional redis-py pipeline);
``MemoryBatch`` is its twin for the stores' in-memory twins: it runs the
queued calls in order when executed, so a reply read too early fails the same
way in both.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

T = TypeVar("T")

_UNSET: Any = object()


class Reply(Generic[T]):
    """A value a batch fills in when it runs."""

    __slots__ = ("_value",)

    def __init__(self) -> None:
        self._value: T = _UNSET

    @classmethod
    def ready(cls, value: T) -> Reply[T]:
        """A reply that needs no command (e.g. nothing to check)."""
        reply: Reply[T] = cls()
        reply.fill(value)
        return reply

    def fill(self, value: T) -> None:
        self._value = value

    @property
    def value(self) -> T:
        if self._value is _UNSET:
            raise RuntimeError("read before its batch ran")
        return self._value


class RedisBatch(Protocol):
    def __len__(self) -> int: ...

    async def execute(self) -> None:
        """One round trip for everything queued (none when nothing was)."""


# A script runs alone in Redis: one over a whole bulk batch (~16k recipients) held every other client, the
# interactive lane's and the API's included, for ~320 ms (about 20 µs per entry). A store queues its script in
# pieces of this many entries instead, each atomic and all in the same round trip: the pieces run one after another,
# so a piece sees every count of the pieces before it, and another client waits for one piece at most (~10 ms).
SCRIPT_PIECE = 500


def pieces(n: int, size: int = SCRIPT_PIECE) -> list[range]:
    """``range(n)`` cut in consecutive pieces of at most ``size``."""
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


class PipelineBatch:
    """Commands queued on one redis-py pipeline: a store queues ``commands`` commands on ``pipe`` per ``expect``."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.pipe: Pipeline = redis.pipeline(transaction=False)
        self._pending: list[tuple[Reply[Any], Callable[[Any], Any], int]] = []

    def expect(self, parse: Callable[[Any], T], commands: int = 1) -> Reply[T]:
        """The reply of the ``commands`` commands just queued on ``pipe`` (several: their list replies joined in
        order, as the pieces of one script give them), parsed by ``parse``."""
        reply: Reply[T] = Reply()
        self._pending.append((reply, parse, commands))
        return reply

    def __len__(self) -> int:
        return len(self._pending)

    async def execute(self) -> None:
        if not self._pending:
            return
        results = await self.pipe.execute()
        at = 0
        for reply, parse, n in self._pending:
            reply.fill(parse(results[at] if n == 1 else _joined(results[at:at + n])))
            at += n
        if at != len(results):
            raise RuntimeError(f"{len(results)} replies for {at} expected commands: a store queued without expecting")
        self._pending = []


def _joined(parts: list[Any]) -> Any:
    """The replies of a script's pieces: their lists end to end (the parts as they are when not all lists)."""
    if all(isinstance(p, list) for p in parts):
        return [x for p in parts for x in p]
    return parts


@dataclass
class RoundTrips:
    """What the in-memory twins count, so a test over them can hold a handler to its round-trip budget."""

    redis: int = 0
    sql: int = 0


class MemoryBatch:
    """The twin: calls run in queue order at ``execute``, which counts one Redis round trip when it runs any."""

    def __init__(self, trips: RoundTrips | None = None) -> None:
        self._pending: list[tuple[Reply[Any], Callable[[], Any]]] = []
        self.trips = trips or RoundTrips()

    def call(self, run: Callable[[], T]) -> Reply[T]:
        reply: Reply[T] = Reply()
        self._pending.append((reply, run))
        return reply

    def __len__(self) -> int:
        return len(self._pending)

    async def execute(self) -> None:
        if not self._pending:
            return
        self.trips.redis += 1
        for reply, run in self._pending:
            reply.fill(run())
        self._pending = []


def pipeline_of(batch: RedisBatch) -> PipelineBatch:
    """The real stores queue onto a real pipeline only: mixing a twin and a real store is a wiring bug."""
    if not isinstance(batch, PipelineBatch):
        raise TypeError(f"a Redis store needs a PipelineBatch, got {type(batch).__name__}")
    return batch


def memory_of(batch: RedisBatch) -> MemoryBatch:
    if not isinstance(batch, MemoryBatch):
        raise TypeError(f"an in-memory store needs a MemoryBatch, got {type(batch).__name__}")
    return batch
