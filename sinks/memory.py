"""An in-memory sink: the twin of the provider sinks for tests of what calls them (no network).

It records every call and every delivery it was given, and answers per address what it was
scripted to (``Sent``, ``Retryable``, ``RateLimited``, ``Permanent``, ``InvalidToken``, ...), in
order, then ``otherwise`` (``None``: ``Sent`` with a fresh message id).
"""
from __future__ import annotations

from collections import deque

from schemas.records import Delivery
from schemas.vocabulary import Channel
from sinks.base import Result, Sent


class MemorySink:
    def __init__(self, channel: Channel = Channel.EMAIL, provider: str = "memory", max_batch: int = 1000,
                 otherwise: Result | None = None) -> None:
        self.channel = channel
        self.provider = provider
        self.max_batch = max_batch
        self.otherwise = otherwise
        self.calls: list[list[Delivery]] = []
        self.closed = False
        self._scripts: dict[str, deque[Result]] = {}
        self._next_id = 0

    def script(self, address: str, *results: Result) -> None:
        """The next answers for ``address``, one per delivery to it, after those already scripted."""
        self._scripts.setdefault(address, deque()).extend(results)

    @property
    def given(self) -> list[Delivery]:
        """Every delivery handed to the sink, in order, over all calls."""
        return [d for call in self.calls for d in call]

    def sent_to(self, address: str) -> int:
        return sum(1 for d in self.given if d.address == address)

    async def send_batch(self, deliveries: list[Delivery]) -> list[Result]:
        self.calls.append(list(deliveries))
        return [self._answer(d) for d in deliveries]

    async def close(self) -> None:
        self.closed = True

    def _answer(self, delivery: Delivery) -> Result:
        queue = self._scripts.get(delivery.address)
        if queue:
            return queue.popleft()
        if self.otherwise is not None:
            return self.otherwise
        self._next_id += 1
        return Sent(f"{self.provider}-{self._next_id}")

