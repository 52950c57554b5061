"""A librdkafka consumer driven from asyncio: every call runs in the consumer's own thread.

librdkafka's consumer is not thread-safe for concurrent calls, and consume blocks; one
single-thread executor per consumer serialises consume, commit, seek/pause and close, so a
close issued while a consume is still waiting runs after it, never beside it.
"""
from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from confluent_kafka import Consumer, Message, TopicPartition

from infra.settings import Settings

T = TypeVar("T")


class ConsumerThread:
    def __init__(self, consumer: Consumer, name: str) -> None:
        self.consumer = consumer
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)

    async def call(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """``fn(*args, **kw)`` in the consumer's thread (for callables that touch the consumer)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args, **kw))

    async def consume(self, n: int, timeout: float) -> list[Message]:
        return await self.call(self.consumer.consume, n, timeout)

    async def commit(self, offsets: list[TopicPartition]) -> None:
        """Synchronous commit of ``offsets``; raises KafkaException when the group refuses it."""
        await self.call(self.consumer.commit, offsets=offsets, asynchronous=False)

    async def close(self) -> None:
        """Commit nothing, leave the group (unless a static member) and free the consumer, even when cancelled."""
        try:
            await asyncio.shield(self.call(self.consumer.close))
        finally:
            self._pool.shutdown(wait=False)


def membership(settings: Settings) -> dict[str, Any]:
    """librdkafka overrides for static group membership (``settings.worker.instance_id``), else nothing.

    A static member that stops does not leave its groups: its partitions wait for it (up to the session
    timeout) and a restart with the same id takes them back without a rebalance. Each agent has a group
    of its own, so one id per worker serves every agent's consumer.
    """
    w = settings.worker
    if not w.instance_id:
        return {}
    return {"group.instance.id": w.instance_id, "session.timeout.ms": int(w.static_session_seconds * 1000)}
