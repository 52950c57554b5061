"""The batch engine's interactive side, against the real broker: a ready agent takes a lone record at once (no window),
a backlog still makes one large batch, and a group new to a topic starts where the Faust agents' group left it."""
from __future__ import annotations

import asyncio
import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from infra.kafka.consumer import consumer
from infra.kafka.handover import adopt_offsets, committed
from infra.kafka.producer import Producer
from infra.kafka.records import OutRecord
from infra.settings import Settings
from infra.topics import admin_client
from streams.runtime.batch_engine import take
from streams.runtime.consumer_thread import ConsumerThread

pytestmark = pytest.mark.integration


def _produce(settings: Settings, n: int) -> None:
    Producer(settings).send_all_blocking([OutRecord(settings.topic("events"), b"k", f"v{i}".encode()) for i in range(n)])


async def _primed(settings: Settings, group: str) -> ConsumerThread:
    """A consumer of the events topic that has its partitions (it read the one priming record)."""
    kafka = ConsumerThread(consumer(settings, group), "test")
    kafka.consumer.subscribe([settings.topic("events")])
    for _ in range(60):
        if await kafka.consume(1, 1.0):
            return kafka
    raise AssertionError("the priming record never came")


def test_a_ready_agent_takes_a_lone_record_as_soon_as_it_arrives_despite_a_long_window(topics):
    settings = topics.model_copy(update={"batch_within": 5.0})   # the bulk agents' window: not for a ready agent
    _produce(settings, 1)

    async def run() -> tuple[int, float]:
        kafka = await _primed(settings, f"{settings.app_id}-ready")
        try:
            taking = asyncio.create_task(take(kafka, settings, True))
            await asyncio.sleep(0.3)
            produced = time.monotonic()
            await asyncio.to_thread(_produce, settings, 1)
            got = await taking
            return len(got), time.monotonic() - produced
        finally:
            await kafka.close()

    n, after = asyncio.run(run())
    # the time includes a new producer's start and its flush (~0.3 s on this busy machine); waiting for the 5 s window
    # would take 5 s more
    assert n == 1 and after < 2.0, after


def test_a_ready_agent_still_takes_a_backlog_in_one_batch(topics):
    settings = topics.model_copy(update={"batch_size": 500})
    _produce(settings, 301)   # one record primes the consumer, 300 wait

    async def run() -> int:
        kafka = await _primed(settings, f"{settings.app_id}-backlog")
        try:
            await asyncio.sleep(1.0)   # librdkafka fetches the rest meanwhile
            return len(await take(kafka, settings, True))
        finally:
            await kafka.close()

    assert asyncio.run(run()) == 300


def test_a_group_that_never_committed_adopts_the_faust_groups_offsets_and_one_that_did_keeps_its_own(topics):
    settings = topics
    topic = settings.topic("events")
    old = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": settings.app_id})
    old.commit(offsets=[TopicPartition(topic, 0, 5), TopicPartition(topic, 1, 7)], asynchronous=False)
    old.close()
    admin = admin_client(settings)
    new = f"{settings.app_id}-route"
    adopted = adopt_offsets(admin, new, settings.app_id, {topic})
    assert sorted((tp.partition, tp.offset) for tp in adopted) == [(0, 5), (1, 7)]
    assert sorted((tp.partition, tp.offset) for tp in committed(admin, new, {topic})) == [(0, 5), (1, 7)]
    # the new group moves on; a later start must not take it back to Faust's offsets
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": new})
    c.commit(offsets=[TopicPartition(topic, 0, 9)], asynchronous=False)
    c.close()
    assert adopt_offsets(admin, new, settings.app_id, {topic}) == []
    assert committed(admin, f"{settings.app_id}-other", {topic}) == []
