"""The batch engine: a confluent-kafka consumer loop, one consumer (and group) per agent, for the route, deliver
and status agents.

Faust's per-record machinery costs ~120 µs of CPU per record on this kind of
machine against ~3 µs for librdkafka's batch consume (bench/runtime.py), which
alone would spend minutes of CPU on a million-user campaign. Agents whose spec
says ``Engine.BATCH`` (streams.runtime.registry) therefore run here instead,
inside the same ``herald worker`` and event loop, with the same Handler and
BatchRunner:

    consume up to batch_size → runner.run(batch) (outputs durable) → commit offsets

The bulk and status agents consume within a window (``batch_within``); the interactive ones (``ready``) take a batch
as soon as a record waits (``take``).

Consume is only called between batches, so a rebalance never revokes a
partition with a batch in flight; a crash before the commit, or a commit the
group refuses (a broker restart lost the member), redelivers the batch
(handlers are idempotent: de-dup and the ledger). A stop finishes and commits
the batch in hand first (streams.runtime.in_hand), then leaves the group.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from confluent_kafka import KafkaException, Message, TopicPartition

from infra.kafka.consumer import consumer, to_in_record
from infra.kafka.handover import adopt_offsets
from infra.kafka.records import InRecord
from infra.settings import Settings
from infra.topics import admin_client
from streams.runtime.consumer_thread import ConsumerThread, membership
from streams.runtime.in_hand import to_the_end
from streams.runtime.liveness import Liveness
from streams.runtime.runner import BatchRunner

log = logging.getLogger("herald.engine")


def parts(batch: list[InRecord], offsets: list[TopicPartition], max_bytes: int | None,
          ) -> list[tuple[list[InRecord], list[TopicPartition]]]:
    """The batch in consecutive parts of at most ``max_bytes`` of values, each with the offsets that commit it
    (records of a partition come in order, so a part's highest offset per partition is its commit)."""
    if max_bytes is None or sum(len(rec.value or b"") for rec in batch) <= max_bytes:
        return [(batch, offsets)]
    out: list[tuple[list[InRecord], list[TopicPartition]]] = []
    part: list[InRecord] = []
    size = 0
    for rec in batch:
        weight = len(rec.value or b"")
        if part and size + weight > max_bytes:
            out.append((part, _commits(part)))
            part, size = [], 0
        part.append(rec)
        size += weight
    out.append((part, _commits(part)))
    return out


def _commits(records: list[InRecord]) -> list[TopicPartition]:
    """Per partition, the offset after its last record (records of a partition come in order)."""
    high: dict[tuple[str, int], int] = {}
    for rec in records:
        high[(rec.topic, rec.partition)] = rec.offset + 1
    return [TopicPartition(t, p, o) for (t, p), o in high.items()]


def _adopt_faust_offsets(settings: Settings, group: str, topics: list[str]) -> None:
    try:
        adopted = adopt_offsets(admin_client(settings), group, settings.app_id, set(topics))
    except (KafkaException, TimeoutError) as exc:   # e.g. another worker's consumer already joined the group
        log.warning("%s: offsets of group %s not adopted (%r)", group, settings.app_id, exc)
        return
    if adopted:
        log.info("%s: starts where group %s left %d partition(s) of %s", group, settings.app_id, len(adopted),
                 ", ".join(topics))


def _accept(name: str, msgs: list[Message]) -> tuple[list[InRecord], list[TopicPartition]]:
    """The batch, and the offsets that commit it."""
    batch: list[InRecord] = []
    for m in msgs:
        if m.error():
            log.warning("%s: consume error %s", name, m.error())
            continue
        batch.append(to_in_record(m))
    return batch, _commits(batch)


READY_IDLE_SECONDS = 1.0   # a ready agent's longest wait for its first record (bounds stop latency; no timer runs)


async def take(kafka: ConsumerThread, settings: Settings, ready: bool) -> list[Message]:
    """Up to ``batch_size`` messages: within ``batch_within`` (a throughput window), or with ``ready`` as soon as one
    is there, together with what the consumer already fetched (a backlog still makes large batches)."""
    if not ready or settings.interactive_within > 0:   # HERALD_INTERACTIVE_WITHIN: a window, as Faust's noack_take
        return await kafka.consume(settings.batch_size, settings.interactive_within if ready else settings.batch_within)
    first = await kafka.consume(1, READY_IDLE_SECONDS)
    if not first or settings.batch_size == 1:
        return first
    return first + await kafka.consume(settings.batch_size - 1, 0)


async def run_batch_agent(name: str, topics: list[str], runner_factory: Callable[[], Awaitable[BatchRunner]],
                          settings: Settings, liveness: Liveness | None = None, batch_bytes: int | None = None,
                          ready: bool = False) -> None:
    """Consume ``topics`` in group ``{app_id}-{name}`` until cancelled; with ``batch_bytes``, what one consume
    returned is handled (and committed) in parts of at most that many value bytes (at least a record each);
    with ``ready`` (an interactive agent), a batch is taken as soon as a record waits (``take``), and a group that
    never committed starts where the Faust agents' group left the topics (the agent ran under Faust before)."""
    live = liveness or Liveness()
    group = f"{settings.app_id}-{name}"
    if ready:
        await asyncio.to_thread(_adopt_faust_offsets, settings, group, topics)
    kafka = ConsumerThread(consumer(settings, group, **membership(settings)), f"engine-{name}")
    kafka.consumer.subscribe(topics)
    live.watch(name, polls=True)
    runner: BatchRunner | None = None

    async def handle_and_commit(batch: list[InRecord], offsets: list[TopicPartition]) -> None:
        assert runner is not None
        await runner.run(batch)
        try:
            await kafka.commit(offsets)
        except KafkaException as exc:
            # the group moved on (broker restart, session lost, rebalance): librdkafka rejoins by itself;
            # whoever owns these partitions next reads the batch again and the handlers' idempotence absorbs it
            log.warning("%s: commit failed (%s); the batch will be read again", name, exc.args[0])
            return

    try:
        while True:
            batch, offsets = _accept(name, await take(kafka, settings, ready))
            if not batch:
                live.done(name)
                continue
            if runner is None:
                runner = await runner_factory()
            for part, part_offsets in parts(batch, offsets, batch_bytes):
                live.begin(name)
                await to_the_end(handle_and_commit(part, part_offsets), settings.worker.stop_seconds, name)
                live.done(name)
    finally:
        # in the consumer's own thread, after any consume still running there; leaves the group
        await kafka.close()
