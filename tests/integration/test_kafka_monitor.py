"""The scheduler's Kafka monitor against the real broker: lag of every agent from its group's committed offsets
(a stuck group with no consumer running shows it), and the DLQ's content by stage and reason."""
from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from infra.kafka import dead_letters as h
from infra.kafka.config import consumer_config, producer_config
from infra.topics import admin_client
from scheduler.metrics import SchedulerMetrics
from scheduler.monitor import KafkaMonitor
from streams.runtime.registry import watched

pytestmark = pytest.mark.integration


def _produce(settings, topic: str, partition: int, n: int, headers: list[tuple[str, bytes]] | None = None) -> None:
    p = Producer(producer_config(settings))
    for i in range(n):
        p.produce(topic, key=f"k{i}".encode(), value=b"v", partition=partition, headers=headers or [])
    assert p.flush(30) == 0


def _commit(settings, group: str, offsets: list[TopicPartition]) -> None:
    """What an agent leaves behind when it stops: committed offsets, and no member in the group."""
    c = Consumer(consumer_config(settings, group))
    try:
        c.commit(offsets=offsets, asynchronous=False)
    finally:
        c.close()


@pytest.fixture
def monitor(topics):
    m = KafkaMonitor(topics, watched(topics), SchedulerMetrics())
    yield m
    m.close()


def _lag(m: KafkaMonitor, agent: str, topic: str) -> float | None:
    return m.metrics.registry.get_sample_value("herald_consumer_lag", {"agent": agent, "topic": topic})


def test_a_stuck_group_without_a_consumer_shows_its_lag_for_every_agent(topics, monitor):
    s = topics
    events, bulk = s.topic("events"), s.topic("bulk")
    _produce(s, events, 0, 5)
    _produce(s, events, 1, 3)
    _produce(s, bulk, 2, 4)
    # route (a Faust agent, group {app_id}) committed 1 record of partition 0 and nothing of partition 1, then stopped;
    # route-bulk (the batch engine, group {app_id}-route-bulk) never started
    _commit(s, s.app_id, [TopicPartition(events, 0, 1)])

    monitor.sample()

    assert _lag(monitor, "route", events) == 4 + 3
    assert _lag(monitor, "route-bulk", bulk) == 4
    agents = {w.agent for w in watched(s)}
    assert {a for a in agents if _lag(monitor, a, next(w.topics[0] for w in watched(s) if w.agent == a)) is not None} == agents
    assert _lag(monitor, "status", s.topic("status")) == 0

    # nobody consumes: more records arrive and the lag grows with no commit from any agent
    _produce(s, events, 2, 2)
    monitor.sample()
    assert _lag(monitor, "route", events) == 9
    # the group catches up: the lag is gone
    _commit(s, s.app_id, [TopicPartition(events, 0, 5), TopicPartition(events, 1, 3), TopicPartition(events, 2, 2)])
    monitor.sample()
    assert _lag(monitor, "route", events) == 0
    assert monitor.metrics.registry.get_sample_value("herald_kafka_monitor_last_sample_timestamp") > 0


def _dead(stage: str, reason: str, replay_of: str | None = None) -> list[tuple[str, bytes]]:
    out = [(h.STAGE, stage.encode()), (h.ERROR_CLASS, reason.encode())]
    return [*out, (h.REPLAY_OF, replay_of.encode())] if replay_of else out


def test_the_dlq_gauge_follows_the_topic_by_reason_replays_and_retention(topics, monitor):
    s = topics
    dlq = s.topic("dlq")

    def count(stage: str, reason: str) -> float | None:
        return monitor.metrics.registry.get_sample_value("herald_dlq_records", {"stage": stage, "reason": reason})

    _produce(s, dlq, 0, 3, _dead("route", "no_route"))        # offsets 0-2
    _produce(s, dlq, 0, 2, _dead("deliver", "permanent"))     # offsets 3-4
    monitor.sample()
    assert (count("route", "no_route"), count("deliver", "permanent")) == (3, 2)

    # offset 3 was replayed and failed again: its newer copy names it, the older one stops counting
    _produce(s, dlq, 0, 1, _dead("deliver", "permanent", replay_of="0:3"))
    _produce(s, dlq, 0, 1, _dead("route", "no_route"))
    monitor.sample()
    assert (count("route", "no_route"), count("deliver", "permanent")) == (4, 2)
    assert monitor.census.tally.next_offset(0) == 7            # each record read once

    # retention removed the first two records
    admin = admin_client(s)
    for fut in admin.delete_records([TopicPartition(dlq, 0, 2)], request_timeout=10).values():
        fut.result(15)
    monitor.sample()
    assert (count("route", "no_route"), count("deliver", "permanent")) == (2, 2)
