"""The retry tiers: one consumer loop per tier topic that holds each record until it is due.

Why not a Faust agent: holding means "stop reading this partition until
time T, and start again at this record". A sleeping Faust agent blocks the
rebalance and keeps the fetched records in memory; Faust's own pause/seek
fights its ack bookkeeping and stream buffer. librdkafka gives exactly the
needed primitives, so each tier runs a confluent-kafka consumer (its own
group ``{app_id}-retry-<tier>``, cooperative-sticky, manual commits) inside
``herald worker``:

    consume → per partition, in offset order (streams.stages.retry_hold):
        due records      → produced unchanged to their origin (deliver) topic
        bad records      → DLQ (stage ``retry``)
        first not due    → seek back to it, pause the partition until due
    → wait for the broker's acks → commit up to the held record

A waiting record stays on the topic, not in memory; the loop polls at least
every half second, so rebalances are served at once, and the committed
offset is the held record, so a partition that moves to another worker
resumes there with nothing lost or forwarded twice. A crash between produce
and commit forwards a record again; the deliver stage's ledger absorbs it.
"""
from __future__ import annotations

import asyncio
import logging
import time

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from infra.kafka.consumer import consumer as make_consumer, to_in_record
from infra.kafka.dead_letters import DeadLetter, dead_letter
from infra.kafka.producer import is_kafka_error
from infra.kafka.records import InRecord, OutRecord, now_ms
from infra.settings import CHANNELS, Settings, tier_name
from infra.topics import deliver_topic
from streams.runtime.consumer_thread import ConsumerThread, membership
from streams.runtime.context import Context
from streams.runtime.in_hand import to_the_end
from streams.runtime.registry import AgentSpec
from streams.stages.retry_hold import PartitionPlan, plan_partition

log = logging.getLogger("herald.retry")

IDLE_POLL_S = 0.5        # the longest a consume call waits: bounds rebalance and stop latency
MAX_BACKOFF_S = 5.0


def tier_agent_name(delay_s: float) -> str:
    return f"retry-{tier_name(delay_s)}"


def deliver_topics(settings: Settings) -> frozenset[str]:
    return frozenset(deliver_topic(settings, c, lane, critical) for c in CHANNELS
                     for lane, critical in (("interactive", False), ("interactive", True), ("bulk", False)))


def origin_topics(settings: Settings) -> frozenset[str]:
    """Where a held record may go back to: the deliver topics, and the receipts topic (a receipt early for its delivery)."""
    return deliver_topics(settings) | {settings.topic("receipts")}


class TierLoop:
    """One tier: consume, forward what is due, hold the rest on the topic."""

    def __init__(self, ctx: Context, topic: str, delay_s: float) -> None:
        self.ctx = ctx
        self.topic = topic
        self.delay_s = delay_s
        self.name = tier_agent_name(delay_s)
        self.origins = origin_topics(ctx.settings)
        self.dlq_topic = ctx.settings.topic("dlq")
        # partition → due time; touched only between consume calls or inside them
        # (rebalance callbacks), never concurrently
        self.held: dict[int, int] = {}
        # partition → offset the next record must have after a seek (drops any
        # record fetched before the seek that is still in librdkafka's queue)
        self.expect: dict[int, int] = {}
        self.forwarded = 0
        self._backoff = 0.1   # after a failed produce, doubling up to MAX_BACKOFF_S

    # --- rebalance callbacks (run inside consume, in the consumer's thread) ---
    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        consumer.incremental_assign(parts)
        consumer.resume(parts)   # a partition held by us before a revoke starts unheld
        for tp in parts:
            self.held.pop(tp.partition, None)
            self.expect.pop(tp.partition, None)
        log.info("%s: assigned %s", self.name, [tp.partition for tp in parts])

    def _on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        # outputs are always durable and committed before the next consume, so
        # there is nothing in flight to finish here
        for tp in parts:
            self.held.pop(tp.partition, None)
            self.expect.pop(tp.partition, None)
        consumer.incremental_unassign(parts)
        log.info("%s: revoked %s", self.name, [tp.partition for tp in parts])

    # --- the loop -------------------------------------------------------------
    async def run(self) -> None:
        """Until cancelled; a stop lets the batch in hand be forwarded and committed first."""
        settings = self.ctx.settings
        kafka = ConsumerThread(make_consumer(
            settings, f"{settings.app_id}-{self.name}",
            # a held partition fetches nothing; bound what librdkafka prefetches for the others
            **{"queued.max.messages.kbytes": 4_096, "fetch.wait.max.ms": 100}, **membership(settings),
        ), self.name)
        kafka.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        live = self.ctx.liveness
        live.watch(self.name, polls=True)
        try:
            while True:
                await kafka.call(self._resume_due, kafka.consumer)
                msgs = await kafka.consume(settings.batch_size, self._poll_timeout())
                by_part = self._accept(msgs)
                if not by_part:
                    self.ctx.metrics.last_commit.labels(self.name).set(time.time())
                    live.done(self.name)
                    continue
                live.begin(self.name)
                await to_the_end(self._forward(kafka, by_part), settings.worker.stop_seconds, self.name)
                live.done(self.name)
        finally:
            await kafka.close()

    async def _forward(self, kafka: ConsumerThread, by_part: dict[int, list[InRecord]]) -> None:
        """Forward what is due, dead-letter the bad, hold the rest and commit; on a Kafka error, rewind and back off."""
        now = now_ms()
        plans = {p: plan_partition(recs, now, self.delay_s, self.origins) for p, recs in by_part.items()}
        try:
            await self.ctx.output.send_all(self._outputs(plans))
        except Exception as exc:
            if not is_kafka_error(exc):
                raise
            # not committed: read the batch again after a pause
            log.warning("%s: produce failed (%r); re-reading the batch in %.1fs", self.name, exc, self._backoff)
            await kafka.call(self._rewind, kafka.consumer, by_part)
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
            return
        self._backoff = 0.1
        await kafka.call(self._hold_and_commit, kafka.consumer, plans)
        self._count(plans)

    def _poll_timeout(self) -> float:
        if not self.held:
            return IDLE_POLL_S
        soonest = (min(self.held.values()) - now_ms()) / 1000
        return max(0.0, min(IDLE_POLL_S, soonest))

    def _resume_due(self, consumer: Consumer) -> None:
        now = now_ms()
        due = [p for p, t in self.held.items() if t <= now]
        if due:
            consumer.resume([TopicPartition(self.topic, p) for p in due])
            for p in due:
                del self.held[p]

    def _accept(self, msgs: list[Message]) -> dict[int, list[InRecord]]:
        by_part: dict[int, list[InRecord]] = {}
        for m in msgs:
            if m.error():
                log.warning("%s: consume error %s", self.name, m.error())
                continue
            rec = to_in_record(m)
            p = rec.partition
            if p in self.held:
                continue   # fetched before the hold; read again after it
            want = self.expect.get(p)
            if want is not None:
                if rec.offset != want:
                    continue
                del self.expect[p]
            by_part.setdefault(p, []).append(rec)
        return by_part

    def _outputs(self, plans: dict[int, PartitionPlan]) -> list[OutRecord]:
        out: list[OutRecord] = []
        for plan in plans.values():
            out += plan.forward
            for r in plan.reject:
                out.append(dead_letter(r.rec, DeadLetter("retry", r.reason, r.error), self.dlq_topic,
                                        self.ctx.settings.max_record_bytes))
        return out

    def _rewind(self, consumer: Consumer, by_part: dict[int, list[InRecord]]) -> None:
        for p, recs in by_part.items():
            consumer.seek(TopicPartition(self.topic, p, recs[0].offset))
            self.expect[p] = recs[0].offset

    def _hold_and_commit(self, consumer: Consumer, plans: dict[int, PartitionPlan]) -> None:
        offsets = []
        for p, plan in plans.items():
            if plan.hold is not None:
                tp = TopicPartition(self.topic, p, plan.hold.offset)
                consumer.pause([tp])
                consumer.seek(tp)
                self.held[p] = plan.hold.due_ms
                self.expect[p] = plan.hold.offset
            if plan.commit_offset is not None:
                offsets.append(TopicPartition(self.topic, p, plan.commit_offset))
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                # a partition revoked meanwhile: its next owner re-forwards, the ledger de-duplicates
                log.warning("%s: commit failed: %s", self.name, exc)
        self.ctx.metrics.last_commit.labels(self.name).set(time.time())

    def _count(self, plans: dict[int, PartitionPlan]) -> None:
        m = self.ctx.metrics
        tier = tier_name(self.delay_s)
        for plan in plans.values():
            if plan.forward:
                m.stage_outcomes.labels("retry", "forwarded", tier).inc(len(plan.forward))
                self.forwarded += len(plan.forward)
            for r in plan.reject:
                m.stage_outcomes.labels("retry", "dead_lettered", r.reason).inc()
                m.dead_letters.labels("retry", r.reason).inc()


def specs(settings: Settings) -> list[AgentSpec]:
    out = []
    for topic, delay in zip(settings.retry_topics, settings.retry_delays, strict=True):
        async def service(ctx: Context, topic: str = topic, delay: float = delay) -> None:
            await TierLoop(ctx, topic, delay).run()

        out.append(AgentSpec(tier_agent_name(delay), [topic], service=service))
    return out
