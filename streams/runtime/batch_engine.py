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

With one batch in hand (every agent but the bulk deliver ones, whose ``ahead``
lets several be in hand: ``run_ahead``), consume is only called between
batches, so a rebalance never revokes a partition with a batch in flight; a crash before the commit, or a commit the
group refuses (a broker restart lost the member), redelivers the batch
(handlers are idempotent: de-dup and the ledger). A stop finishes and commits
the batches in hand first (within ``worker.stop_seconds``), then leaves the group.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from confluent_kafka import KafkaException, Message, TopicPartition

from infra.kafka.consumer import consumer, to_in_record
from infra.kafka.handover import adopt_offsets
from infra.kafka.records import InRecord
from infra.settings import Settings
from infra.topics import admin_client
from streams.runtime.consumer_thread import ConsumerThread, membership
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
                          ready: bool = False, ahead: int = 1) -> None:
    """Consume ``topics`` in group ``{app_id}-{name}`` until cancelled; with ``batch_bytes``, what one consume
    returned is handled (and committed) in parts of at most that many value bytes (at least a record each);
    with ``ready`` (an interactive agent), a batch is taken as soon as a record waits (``take``), and a group that
    never committed starts where the Faust agents' group left the topics (the agent ran under Faust before);
    with ``ahead`` > 1, that many parts are handled at once (``run_ahead``)."""
    live = liveness or Liveness()
    group = f"{settings.app_id}-{name}"
    if ready:
        await asyncio.to_thread(_adopt_faust_offsets, settings, group, topics)
    kafka = ConsumerThread(consumer(settings, group, **membership(settings)), f"engine-{name}")
    kafka.consumer.subscribe(topics)
    live.watch(name, polls=True)
    try:
        await run_ahead(name, kafka, runner_factory, settings, live, batch_bytes, ready, max(1, ahead))
    finally:
        # in the consumer's own thread, after any consume still running there; leaves the group
        await kafka.close()


async def run_ahead(name: str, kafka: ConsumerThread, runner_factory: Callable[[], Awaitable[BatchRunner]],
                    settings: Settings, live: Liveness, batch_bytes: int | None, ready: bool, ahead: int) -> None:
    """The loop: up to ``ahead`` parts in hand at once, each with a runner (and handler) of its own, committed in the
    order they were taken. With ``ahead`` > 1, one part's round trips (PostgreSQL, the provider, Kafka's
    acknowledgement) leave the CPU to another's work: the bulk deliver agents, which otherwise wait on each in turn.

    With one part in hand (every agent but the bulk deliver ones), each part is finished and committed before the
    next consume. With more, consume runs while parts are in hand, so a rebalance may take their partitions
    meanwhile: their commit is then refused or made by the group's next generation, and whoever owns them next reads
    them again (the ledger absorbs a second delivery, as after a crash). A stop gives every part in hand
    ``settings.worker.stop_seconds`` to finish, and commits those that did, in order."""
    free: list[BatchRunner] = []
    in_hand: deque[tuple[asyncio.Future[None], BatchRunner, list[TopicPartition]]] = deque()

    async def commit(offsets: list[TopicPartition]) -> None:
        try:
            await kafka.commit(offsets)
        except KafkaException as exc:
            log.warning("%s: commit failed (%s); the batch will be read again", name, exc.args[0])

    async def finish_oldest() -> None:
        task, runner, offsets = in_hand[0]
        await asyncio.shield(task)
        await commit(offsets)   # still in hand meanwhile: a stop during the commit commits it (again) on its way out
        in_hand.popleft()
        free.append(runner)
        live.done(name)
        if in_hand:   # the next part in hand counts as begun now: a stall is no part finishing for the threshold
            live.begin(name)

    try:
        while True:
            while in_hand and (len(in_hand) >= ahead or in_hand[0][0].done()):
                await finish_oldest()
            batch, offsets = _accept(name, await take(kafka, settings, ready))
            if not batch:
                if not in_hand:
                    live.done(name)
                continue
            for part, part_offsets in parts(batch, offsets, batch_bytes):
                while len(in_hand) >= ahead:
                    await finish_oldest()
                runner = free.pop() if free else await runner_factory()
                if not in_hand:
                    live.begin(name)
                in_hand.append((asyncio.ensure_future(runner.run(part)), runner, part_offsets))
    except asyncio.CancelledError:
        await _finish_in_hand(name, in_hand, commit, settings.worker.stop_seconds)
        raise


async def _finish_in_hand(name: str, in_hand: deque[tuple[asyncio.Future[None], BatchRunner, list[TopicPartition]]],
                          commit: Callable[[list[TopicPartition]], Awaitable[None]], bound: float) -> None:
    """A stop: the parts in hand get up to ``bound`` s to finish; those finished, up to the first that did not, are
    committed in order; the rest are cancelled (not committed: read again)."""
    if not in_hand:
        return
    log.info("%s: stopping; finishing the batch in hand (%d in all, up to %g s)", name, len(in_hand), bound)
    with contextlib.suppress(asyncio.CancelledError):   # cancelled again: stop now
        await asyncio.wait([task for task, _, _ in in_hand], timeout=bound)
    committing = True
    for task, _, offsets in in_hand:
        if committing and task.done() and not task.cancelled() and task.exception() is None:
            await commit(offsets)
            continue
        if committing:
            log.warning("%s: a batch in hand did not finish within %g s; it is not committed and will be read again",
                        name, bound)
        committing = False
        task.cancel()
