"""The upstream SDK: records arrive typed and keyed, scheduled sends carry send_at, and the broker's refusals reach the caller."""
from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, TopicPartition

from infra.kafka.records import TRACE
from infra.topics import events_topic
from producers.sdk import EmitError, Emitter, next_local
from schemas.codec import Codec

pytestmark = pytest.mark.integration


def read(settings, topic: str, n: int, timeout: float = 60) -> list:
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{settings.app_id}-sdk-{time.time_ns()}",
                  "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            got += [m for m in c.consume(100, 0.5) if not m.error()]
    finally:
        c.close()
    return got


def test_a_birthday_scheduled_for_monday_nine_in_the_users_zone(topics):
    settings = topics
    when = next_local("09:00", "Asia/Tokyo", weekday="monday")
    with Emitter(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix) as herald:
        eid = herald.emit("BirthdayReached", {"user_id": "u-tokyo", "age": 40}, send_at=when, trace_id="trace-1")
    [msg] = read(settings, settings.topic("events"), 1)
    rec = Codec().decode(msg.value())
    assert rec.name == "BirthdayReached" and rec.record["event_id"] == eid
    assert rec.record["send_at"] == when  # an instant: Monday 09:00 in Tokyo
    assert when.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo")).strftime("%a %H:%M") == "Mon 09:00"
    assert msg.key() == b"u-tokyo" and dict(msg.headers())[TRACE] == b"trace-1"


def test_campaign_messages_go_to_the_bulk_lane_and_wait_returns_after_the_ack(topics):
    settings = topics
    # a long linger keeps an unflushed record in the client for 5 s: only a real wait has it on the broker at once
    herald = Emitter(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix, **{"linger.ms": 5000})
    herald.emit("CampaignMessage", {"event_id": "c1:u1", "campaign_id": "c1", "user_id": "u1", "template": "promo"}, wait=True)
    assert _records_on(settings, settings.topic("bulk")) == 1   # right when emit returned: no polling
    assert len(read(settings, settings.topic("bulk"), 1)) == 1
    herald.close()


def _records_on(settings, topic: str) -> int:
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{settings.app_id}-marks"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        marks = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts]
        return sum(high - low for low, high in marks)
    finally:
        c.close()


def test_a_users_events_land_on_the_partition_java_and_aiokafka_choose_for_the_key(topics):
    """Per-user order holds across clients only if every client hashes a key to the same partition."""
    from aiokafka.partitioner import DefaultPartitioner

    settings = topics
    users = [f"user-{i}" for i in range(40)]
    with Emitter(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix) as herald:
        for u in users:
            herald.emit("BirthdayReached", {"user_id": u, "age": 30}, wait=False)
    got = read(settings, settings.topic("events"), len(users))
    assert len(got) == len(users)
    parts = list(range(settings.partitions))
    expected = {u: DefaultPartitioner()(u.encode(), parts, parts) for u in users}
    assert len(set(expected.values())) > 1
    assert {m.key().decode(): m.partition() for m in got} == expected


def test_an_unreachable_broker_is_an_error_for_the_caller():
    herald = Emitter("127.0.0.1:1", topic_prefix="nowhere", **{"message.timeout.ms": 1500})
    with pytest.raises(EmitError) as caught:
        herald.emit("BirthdayReached", {"event_id": "b-1", "user_id": "u1"}, wait=True)
    assert caught.value.errors[0][0] == "b-1"
    assert "1 record(s) not delivered" in str(caught.value)


def test_leaving_the_with_block_raises_what_was_not_delivered():
    with pytest.raises(EmitError, match="2 record"):
        with Emitter("127.0.0.1:1", topic_prefix="nowhere", **{"message.timeout.ms": 1500}) as herald:
            herald.emit("BirthdayReached", {"user_id": "u1"})
            herald.emit("BirthdayReached", {"user_id": "u2"})


def test_a_record_the_producer_refuses_is_raised_at_emit(topics):
    settings = topics
    herald = Emitter(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix)
    with pytest.raises(EmitError, match=r"too large|size"):
        herald.emit("NotificationRequested", {"user_id": "u1", "template": "t", "channels": ["email"],
                                               "variables_json": "x" * 2_000_000})
    herald.close()


@pytest.mark.parametrize(
    ("name", "record", "kw", "message"),
    [
        ("UserFollowed", {"user_id": "u1", "follower_id": "u2", "follower_name": "B"}, {"send_at": datetime.now(UTC)}, "no send_at field"),
        ("BirthdayReached", {"user_id": "u1"}, {"send_at": datetime(2030, 1, 1)}, "timezone-aware"),
        ("BirthdayReached", {"user_id": "u1", "age": "forty"}, {}, "does not match the schema"),
        ("BirthdayReached", {"age": 3}, {}, "does not match the schema|user_id"),
        ("NoSuchEvent", {"user_id": "u1"}, {}, "no schema named"),
    ],
)
def test_bad_records_are_refused_before_anything_is_sent(name, record, kw, message):
    herald = Emitter("127.0.0.1:1", topic_prefix="nowhere")
    with pytest.raises(ValueError, match=message):
        herald.emit(name, record, **kw)
    herald.flush(1)  # nothing was queued: nothing to fail


def test_critical_events_take_the_critical_topic_as_the_routes_file_says(topics):
    """PasswordResetRequested routes to 'security', a critical category: the SDK sends it (and a NotificationRequested
    of a critical category) to events.critical, routed by an agent of its own; everything else to events."""
    settings = topics
    with Emitter(settings=settings) as herald:
        assert "PasswordResetRequested" in herald.critical_events and "OrderPlaced" not in herald.critical_events
        reset = herald.emit("PasswordResetRequested", {"user_id": "u1", "reset_url": "https://x.test/r", "expires_in_minutes": 5})
        asked = herald.emit("NotificationRequested", {"user_id": "u1", "template": "t", "channels": ["email"],
                                                      "category": "security"})
        birthday = herald.emit("BirthdayReached", {"user_id": "u1", "age": 30})
    on_critical = read(settings, events_topic(settings, critical=True), 2)
    on_events = read(settings, events_topic(settings), 1)
    assert sorted(Codec().decode(m.value()).record["event_id"] for m in on_critical) == sorted([reset, asked])
    assert [Codec().decode(m.value()).record["event_id"] for m in on_events] == [birthday]
    with Emitter(settings=settings, critical_events=set()) as herald:   # the caller's choice wins
        plain = herald.emit("PasswordResetRequested", {"user_id": "u1", "reset_url": "https://x.test/r", "expires_in_minutes": 5})
    assert plain in [Codec().decode(m.value()).record["event_id"] for m in read(settings, events_topic(settings), 2)]
