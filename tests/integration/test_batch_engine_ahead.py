"""The batch engine with several batches in hand (the bulk deliver agents), against the real broker: a slow batch does
not hold the next one back, yet nothing is committed past a batch that has not finished; each batch in hand has a
handler of its own; a stop commits, in order, the batches that finish within the stop's bound, and none after one
that did not."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import pytest

from infra.kafka.handover import committed
from infra.kafka.producer import Producer
from infra.kafka.records import InRecord, OutRecord
from infra.settings import Settings
from infra.topics import admin_client
from streams.runtime.batch_engine import run_batch_agent
from streams.runtime.runner import BatchRunner

pytestmark = pytest.mark.integration


class Runs:
    """Fake runners: a record ``hold`` waits for ``release``, ``slow`` for 0.3 s; the rest return at once."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[str] = []
        self.finished: list[str] = []
        self.runners: set[int] = set()
        self.concurrent = 0
        self.most_at_once = 0

    async def factory(self) -> BatchRunner:
        runs = self

        class Runner:
            async def run(self, batch: list[InRecord]) -> None:
                runs.runners.add(id(self))
                runs.concurrent += 1
                runs.most_at_once = max(runs.most_at_once, runs.concurrent)
                try:
                    for rec in batch:
                        value = (rec.value or b"").decode()
                        runs.started.append(value)
                        if value.startswith("hold"):
                            await runs.release.wait()
                        elif value.startswith("slow"):
                            await asyncio.sleep(0.3)
                        runs.finished.append(value)
                finally:
                    runs.concurrent -= 1

        return cast(BatchRunner, Runner())


def _produce(settings: Settings, values: list[str]) -> None:
    # one key: one partition, so the offsets are the values' order
    Producer(settings).send_all_blocking([OutRecord(settings.topic("events"), b"k", v.encode()) for v in values])


def _committed(settings: Settings, group: str) -> int:
    offsets = committed(admin_client(settings), group, {settings.topic("events")})
    return max((tp.offset for tp in offsets), default=0)


async def _until(check: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    for _ in range(int(seconds * 20)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


def _agent(settings: Settings, runs: Runs, name: str) -> asyncio.Task[None]:
    # batch_bytes of one record: each record is a batch of its own
    return asyncio.create_task(run_batch_agent(name, [settings.topic("events")], runs.factory, settings,
                                               batch_bytes=1, ahead=2))


def test_a_slow_batch_does_not_hold_the_next_but_nothing_is_committed_past_it(topics):
    settings = topics
    name = "ahead-order"
    group = f"{settings.app_id}-{name}"
    _produce(settings, ["hold-0", "fast-1", "fast-2", "fast-3"])

    async def run() -> tuple[int, int]:
        runs = Runs()
        agent = _agent(settings, runs, name)
        try:
            await _until(lambda: "fast-1" in runs.finished, "the batch after the held one finished")
            await asyncio.sleep(1.0)   # time enough for a commit, were one made
            held = await asyncio.to_thread(_committed, settings, group)
            assert runs.finished == ["fast-1"] and "fast-2" not in runs.started   # two in hand, no more
            runs.release.set()
            await _until(lambda: len(runs.finished) == 4, "every batch finished")
            await _until(lambda: _committed(settings, group) == 4, "every batch committed")
            assert runs.most_at_once == 2 and len(runs.runners) == 2
            return held, await asyncio.to_thread(_committed, settings, group)
        finally:
            agent.cancel()
            await asyncio.gather(agent, return_exceptions=True)

    held, after = asyncio.run(run())
    assert held == 0      # fast-1 finished, but the held batch before it had not: nothing committed
    assert after == 4


@pytest.mark.parametrize(("first", "stop_seconds", "expected"), [
    ("slow-0", 5.0, 2),   # the slow batch finishes within the stop's bound: both are committed
    ("hold-0", 0.5, 0),   # it does not: neither it nor the finished one after it is committed
])
def test_a_stop_commits_in_order_the_batches_in_hand_that_finish(topics, first: str, stop_seconds: float, expected: int):
    settings = topics.model_copy(update={"worker": topics.worker.model_copy(update={"stop_seconds": stop_seconds})})
    name = f"ahead-stop-{first}"
    group = f"{settings.app_id}-{name}"
    _produce(settings, [first, "fast-1"])

    async def run() -> int:
        runs = Runs()
        agent = _agent(settings, runs, name)
        await _until(lambda: "fast-1" in runs.finished, "both batches in hand")
        agent.cancel()
        await asyncio.gather(agent, return_exceptions=True)
        assert agent.cancelled()
        return await asyncio.to_thread(_committed, settings, group)

    assert asyncio.run(run()) == expected
