"""The API's Kafka side: a producer whose sends await their delivery reports, and consumer-group offsets for /healthz.

Unlike a worker's ``Producer.send_all`` (a batch that flushes under a lock), many
requests produce concurrently here through the same wire-layer producer: each
awaits only its own records' delivery reports, served by one poll thread.
"""
from __future__ import annotations

import asyncio
import threading
import time

from confluent_kafka import KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from infra.kafka.producer import ProduceError, Producer
from infra.kafka.records import OutRecord
from infra.settings import Settings

Offsets = dict[tuple[str, str, int], tuple[int, int]]


class AsyncProducer:
    def __init__(self, settings: Settings, *, message_timeout_ms: int = 10_000) -> None:
        # a short linger: a request waits for its own record, not for a batch to fill
        self._producer = Producer(settings, **{"linger.ms": 1, "message.timeout.ms": message_timeout_ms})
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="api-producer-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.05)

    async def send(self, records: list[OutRecord], timeout: float = 15.0) -> None:
        """Produce ``records``; returns once the broker acknowledged all of them (acks=all), else raises ProduceError."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        for r in records:
            fut: asyncio.Future[None] = loop.create_future()

            def report(err: KafkaError | None, _msg: object, fut: asyncio.Future[None] = fut) -> None:
                loop.call_soon_threadsafe(_settle, fut, err)

            for _ in range(200):
                if self._producer.try_produce(r, report):
                    break
                await asyncio.sleep(0.01)  # local queue full: let the poll thread drain it
            else:
                raise ProduceError("producer queue full")
            futures.append(fut)
        try:
            await asyncio.wait_for(asyncio.gather(*futures), timeout)
        except TimeoutError as exc:
            raise ProduceError(f"no delivery report within {timeout}s") from exc

    def close(self) -> None:
        self._producer.flush(5)
        self._closed.set()
        self._thread.join(2)


def _settle(fut: asyncio.Future[None], err: KafkaError | None) -> None:
    if fut.done():
        return
    if err is not None:
        fut.set_exception(ProduceError(f"broker did not take the record: {err.str()}"))
    else:
        fut.set_result(None)


def herald_groups(admin: AdminClient, app_id: str, timeout: float = 5.0) -> list[str]:
    """The workers' consumer groups: ``app_id`` (Faust agents) and ``app_id-<agent>`` (batch engine, retry tiers)."""
    listed = admin.list_consumer_groups(request_timeout=timeout).result()
    return sorted(g.group_id for g in listed.valid if g.group_id == app_id or g.group_id.startswith(app_id + "-"))


def group_offsets(admin: AdminClient, groups: list[str], timeout: float = 5.0) -> Offsets:
    """``{(group, topic, partition): (committed, log_end)}`` for every partition of every topic a group committed on.

    Blocking (call it in a thread). A partition of such a topic without a commit reads committed = -1.
    """
    from confluent_kafka import ConsumerGroupTopicPartitions

    committed: dict[tuple[str, str, int], int] = {}
    for group in groups:  # the admin API takes one group per request
        res = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=timeout)[group].result()
        committed.update({(group, tp.topic, tp.partition): tp.offset for tp in res.topic_partitions if not tp.error})
    topics = {t for _, t, _ in committed}
    if not topics:
        return {}
    meta = admin.list_topics(timeout=timeout)
    wanted = [TopicPartition(t, p) for t in topics if (tm := meta.topics.get(t)) is not None for p in tm.partitions]
    ends = {(tp.topic, tp.partition): f.result().offset
            for tp, f in admin.list_offsets({tp: OffsetSpec.latest() for tp in wanted}, request_timeout=timeout).items()}
    out: Offsets = {}
    for group in groups:
        for t in {t for g, t, _ in committed if g == group}:
            for (topic, p), end in ends.items():
                if topic == t:
                    out[(group, t, p)] = (committed.get((group, t, p), -1), end)
    return out


def kafka_answers(admin: AdminClient, timeout: float = 3.0) -> str:
    """Blocking: the broker count, or raises when no broker answers within ``timeout``."""
    t0 = time.perf_counter()
    meta = admin.list_topics(timeout=timeout)
    if not meta.brokers:
        raise ConnectionError("no broker in the metadata")
    return f"{len(meta.brokers)} broker(s), {1000 * (time.perf_counter() - t0):.1f} ms"
