"""The retry tiers hold each failed delivery until it is due, then send it back to its deliver topic unchanged."""
from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, ConsumerGroupState
from confluent_kafka.admin import AdminClient

from infra.kafka.producer import Producer
from infra.kafka.records import TRACE, OutRecord, now_ms
from infra.settings import Settings, tier_name
from infra.topics import deliver_topic, ensure_topics
from streams.stages.retry import DUE_HEADER, ORIGIN_HEADER
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration


def failed_delivery(topic: str, origin: str, key: str, failed_at: int, delay_s: float) -> OutRecord:
    """What the deliver stage writes to a tier after a retryable failure at ``failed_at``."""
    return OutRecord(
        topic,
        key.encode(),
        f"delivery-{key}".encode(),
        [(TRACE, f"trace-{key}".encode()), (DUE_HEADER, str(failed_at + int(delay_s * 1000)).encode()),
         (ORIGIN_HEADER, origin.encode())],
    )


def group_members(settings: Settings, group: str) -> list[list[int]]:
    """Partitions of each member, when the group is stable; [] otherwise."""
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    desc = admin.describe_consumer_groups([group])[group].result(10)
    if desc.state != ConsumerGroupState.STABLE:
        return []
    return [[tp.partition for tp in m.assignment.topic_partitions] for m in desc.members]


def collect(settings: Settings, topic: str, n: int, timeout: float) -> list:
    """Read ``topic`` from the beginning until ``n`` records arrived, then 2 s more to catch duplicates."""
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"check-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got, deadline, extra_until = [], time.monotonic() + timeout, None
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                got.append(m)
            if len(got) >= n and extra_until is None:
                extra_until = time.monotonic() + 2
            if extra_until is not None and time.monotonic() > extra_until:
                break
    finally:
        c.close()
    return got


def ready(settings: Settings, worker, agent: str) -> None:
    wait_for(lambda: group_members(settings, f"{settings.app_id}-{agent}") or (not worker.alive() and pytest.fail(worker.log_text()[-3000:])),
             timeout=90, interval=0.5, message=f"{agent} in its consumer group")


def test_each_tier_forwards_unchanged_never_before_due_and_rejects_records_without_origin(topics, worker_factory):
    settings = topics
    origin = deliver_topic(settings, "email")
    w = worker_factory(settings, agents=[f"retry-{tier_name(d)}" for d in settings.retry_delays])
    for d in settings.retry_delays:
        ready(settings, w, f"retry-{tier_name(d)}")

    out = Producer(settings)
    sent: dict[str, tuple[int, float]] = {}   # key → (due ms, delay)
    records = []
    failed_at = now_ms()
    for tier, (topic, delay) in enumerate(zip(settings.retry_topics, settings.retry_delays, strict=True)):
        for i in range(5):
            key = f"u{tier}-{i}"
            records.append(failed_delivery(topic, origin, key, failed_at, delay))
            sent[key] = (failed_at + int(delay * 1000), delay)
    # a record with no origin, in the longest tier: dead-lettered, and the ones behind it still flow
    longest = settings.retry_topics[-1]
    records.insert(len(records) - 5, OutRecord(longest, b"lost", b"no-origin", [(DUE_HEADER, str(failed_at).encode())]))
    out.send_all_blocking(records)

    got = collect(settings, origin, len(sent), timeout=60)
    keys = [m.key().decode() for m in got]
    assert sorted(keys) == sorted(sent), "each record forwarded exactly once"
    for m in got:
        key = m.key().decode()
        due, delay = sent[key]
        forwarded_at = m.timestamp()[1]   # CreateTime: when the tier produced it
        assert forwarded_at >= due, f"{key} forwarded {due - forwarded_at} ms early"
        assert forwarded_at >= failed_at + delay * 1000   # the delay counts from the failure
        assert m.value() == f"delivery-{key}".encode()
        headers = dict(m.headers())
        assert headers[TRACE] == f"trace-{key}".encode() and headers[ORIGIN_HEADER] == origin.encode()

    dead = collect(settings, settings.topic("dlq"), 1, timeout=30)
    assert len(dead) == 1
    h = dict(dead[0].headers())
    assert dead[0].value() == b"no-origin"
    assert (h["herald-dlq-stage"], h["herald-dlq-error-class"]) == (b"retry", b"no_origin")
    assert h["herald-dlq-origin-topic"] == longest.encode()


def test_a_later_record_that_is_due_earlier_never_overtakes_and_is_never_early(topics, worker_factory):
    settings = topics
    origin = deliver_topic(settings, "sms")
    topic, delay = settings.retry_topics[0], settings.retry_delays[0]
    w = worker_factory(settings, agents=[f"retry-{tier_name(delay)}"])
    ready(settings, w, f"retry-{tier_name(delay)}")
    now = now_ms()
    # same key → same partition; the first is due in 4 s, the second in 1 s
    a = failed_delivery(topic, origin, "same", now + 3000, delay)
    b = failed_delivery(topic, origin, "same", now, delay)
    b.value = b"second"
    Producer(settings).send_all_blocking([a, b])
    got = collect(settings, origin, 2, timeout=60)
    assert [m.value() for m in got] == [b"delivery-same", b"second"]
    assert got[0].timestamp()[1] >= now + 4000


def test_a_worker_joining_while_records_wait_in_the_longest_tier_settles_at_once_and_nothing_is_lost_or_doubled(
    settings, worker_factory
):
    settings = settings.model_copy(update={"small_partitions": 3, "retry_delays": [1.0, 2.0, 25.0]})
    ensure_topics(settings)
    origin = deliver_topic(settings, "push")
    topic, delay = settings.retry_topics[-1], settings.retry_delays[-1]
    agent = f"retry-{tier_name(delay)}"
    group = f"{settings.app_id}-{agent}"
    w1 = worker_factory(settings, agents=[agent])
    ready(settings, w1, agent)
    assert sorted(p for m in group_members(settings, group) for p in m) == [0, 1, 2]

    failed_at = now_ms()
    n = 60
    Producer(settings).send_all_blocking(
        [failed_delivery(topic, origin, f"user-{i}", failed_at, delay) for i in range(n)]
    )
    time.sleep(3)   # worker 1 has read every partition and holds them
    worker_factory(settings, agents=[agent])

    members = wait_for(lambda: (ms := group_members(settings, group)) and len(ms) == 2 and all(ms) and ms,
                       timeout=60, interval=0.2, message="the group to settle with both workers")
    settled_at = now_ms()
    # the rebalance did not wait for the held records: it settled while they were still waiting
    assert settled_at < failed_at + delay * 1000, f"settled {settled_at - failed_at} ms after the failure"
    assert sorted(p for m in members for p in m) == [0, 1, 2]

    got = collect(settings, origin, n, timeout=90)
    keys = [m.key().decode() for m in got]
    assert sorted(keys) == sorted(f"user-{i}" for i in range(n)), "every record forwarded exactly once"
    assert min(m.timestamp()[1] for m in got) >= failed_at + delay * 1000
