"""/healthz fails when a consumer group of the workers stops committing while records wait, and recovers when it commits."""
from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, TopicPartition
from fastapi.testclient import TestClient

from infra.kafka.producer import Producer
from infra.kafka.records import OutRecord
from producers.api import create_api
from producers.api.config import ApiConfig
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration


def commit(settings, group: str, topic: str, offset: int) -> None:
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        c.close()


def test_healthz_fails_on_a_stalled_group_and_recovers(topics):
    settings = topics
    topic = settings.topic("receipts")  # one partition in tests
    Producer(settings).send_all_blocking([OutRecord(topic, b"k", b"v") for _ in range(5)])
    group = f"{settings.app_id}-receipts"
    commit(settings, group, topic, 2)  # a consumer that got stuck after two records
    with TestClient(create_api(settings, ApiConfig(commit_stall_seconds=2, health_cache_seconds=0))) as client:
        first = client.get("/healthz")
        assert first.status_code == 200, first.text  # no history yet: nothing proves a stall
        assert group in first.json()["groups"] and first.json()["lag"] == 3
        stalled = wait_for(lambda: (r := client.get("/healthz")).status_code == 503 and r, 30, interval=0.5, message="503")
        [s] = stalled.json()["stalled"]
        assert (s["group"], s["topic"], s["lag"]) == (group, topic, 3) and s["seconds_without_commit"] >= 2
        commit(settings, group, topic, 5)  # it caught up
        assert client.get("/healthz").status_code == 200
        time.sleep(2.5)
        assert client.get("/healthz").status_code == 200  # caught up and idle is healthy however old the commit
