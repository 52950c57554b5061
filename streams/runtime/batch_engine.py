"""The batch engine: a confluent-kafka consumer loop for the high-volume agents.

Faust's per-record machinery costs ~120 µs of CPU per record on this kind of
machine against ~3 µs for librdkafka's batch consume (bench/runtime.py), which
alone would spend minutes of CPU on a million-user campaign. Agents listed in
``settings.batch_engine_agents`` therefore run here instead, inside the same
``herald worker`` and event loop, with the same Handler and BatchRunner:

    consume up to batch_size → runner.run(batch) (outputs durable) → commit offsets

Consume is only called between batches, so a rebalance never revokes a
partition with a batch in flight; a crash before the commit, or a commit the
group refuses (a broker restart lost the member), redelivers the batch
(handlers are idempotent: de-dup and the ledger).
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from confluent_kafka import Consumer, KafkaException, TopicPartition

from infra.kafka.consumer import consumer, to_in_record
from infra.settings import Settings
from streams.runtime.runner import BatchRunner

log = logging.getLogger("herald.engine")


def _record_lag(consumer: Consumer, committed: list[TopicPartition], lag: dict[tuple[str, int], int], metrics) -> None:
    """Records behind the log end per topic, from librdkafka's cached watermarks (no round trip)."""
    for tp in committed:
        try:
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
        except Exception:  # noqa: BLE001 - no cached watermark yet
            continue
        if high >= 0:
            lag[(tp.topic, tp.partition)] = max(0, high - tp.offset)
    for topic in {t for t, _ in lag}:
        metrics.consumer_lag.labels(topic).set(sum(v for (t, _), v in lag.items() if t == topic))


async def run_batch_agent(name: str, topics: list[str], runner_factory, settings: Settings) -> None:
    """Consume ``topics`` in group ``{app_id}-{name}`` until cancelled."""
    pool = ThreadPoolExecutor(1, thread_name_prefix=f"engine-{name}")
    loop = asyncio.get_running_loop()
    kafka = consumer(settings, f"{settings.app_id}-{name}")
    kafka.subscribe(topics)
    runner: BatchRunner | None = None
    lag: dict[tuple[str, int], int] = {}
    try:
        while True:
            msgs = await loop.run_in_executor(pool, kafka.consume, settings.batch_size, settings.batch_within)
            batch, high = [], {}
            for m in msgs:
                if m.error():
                    log.warning("%s: consume error %s", name, m.error())
                    continue
                batch.append(to_in_record(m))
                high[(m.topic(), m.partition())] = m.offset() + 1
            if not batch:
                continue
            if runner is None:
                runner = await runner_factory()
            await runner.run(batch)
            offsets = [TopicPartition(t, p, o) for (t, p), o in high.items()]
            try:
                await loop.run_in_executor(pool, lambda: kafka.commit(offsets=offsets, asynchronous=False))
            except KafkaException as exc:
                # the group moved on (broker restart, session lost, rebalance): librdkafka rejoins by itself;
                # whoever owns these partitions next reads the batch again and the handlers' idempotence absorbs it
                log.warning("%s: commit failed (%s); the batch will be read again", name, exc.args[0])
                continue
            _record_lag(kafka, offsets, lag, runner.ctx.metrics)
    except asyncio.CancelledError:
        raise
    finally:
        # close in the consumer's own thread, after any consume still running there
        await asyncio.shield(loop.run_in_executor(pool, kafka.close))
        pool.shutdown(wait=False)
