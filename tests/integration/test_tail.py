"""herald tail: decoded records of any Herald topic, either framing, as JSON lines (against the real broker)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from confluent_kafka import Producer as KafkaProducer
from confluent_kafka.schema_registry import SchemaRegistryClient, record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from infra.settings import SchemaRegistryConfig, Settings
from infra.tools.sandbox.registry import running_registry
from infra.tools.sandbox.server import free_port
from schemas.catalog import load_catalog
from schemas.codec import Codec
from tests.support.env import settings_env

pytestmark = pytest.mark.integration

ORDER = load_catalog().latest("OrderPlaced").raw


def order(n: int) -> dict:
    return {"event_id": f"e{n}", "occurred_at": 1_790_000_000_000 + n, "user_id": f"u{n}", "order_id": f"o-{n}",
            "currency": "EUR", "total_cents": 100 * n, "items": [], "shipping_address": None}


def herald(settings: Settings, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings_env(settings), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "infra.tools.cli.main", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture
def registry():
    with running_registry("127.0.0.1", free_port()) as reg:
        yield reg


@pytest.fixture
def filled(topics: Settings, registry) -> Settings:
    """herald.events of this test, partition 0: single-object, Confluent-framed, garbage; keys are user ids."""
    settings = topics.model_copy(update={"schema_registry": SchemaRegistryConfig(url=registry.url)})
    ser = AvroSerializer(SchemaRegistryClient({"url": registry.url}), json.dumps(ORDER),
                         conf={"subject.name.strategy": record_subject_name_strategy})
    p = KafkaProducer({"bootstrap.servers": settings.kafka_bootstrap})
    t = settings.topic("events")
    p.produce(t, Codec().encode("OrderPlaced", order(1)), key=b"u1", partition=0, headers=[("herald-trace-id", b"tr-1")])
    p.produce(t, ser(order(2), SerializationContext(t, MessageField.VALUE)), key=b"u2", partition=0,
              headers=[("origin", b"\xff\x00")])
    p.produce(t, b"\x01 not avro", key=b"u3", partition=0)
    assert p.flush(30) == 0
    return settings


def lines(done: subprocess.CompletedProcess) -> list[dict]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_tail_prints_both_framings_with_key_partition_offset_and_headers(filled: Settings):
    out = lines(herald(filled, "tail", "events", "--from-beginning"))
    assert [(r["partition"], r["offset"], r["key"]) for r in out] == [(0, 0, "u1"), (0, 1, "u2"), (0, 2, "u3")]
    first, second, third = out
    assert first["topic"] == filled.topic("events") and first["headers"] == {"herald-trace-id": "tr-1"}
    assert first["framing"] == "single_object" and first["schema"] == {"name": "OrderPlaced", "version": 1}
    assert first["value"]["order_id"] == "o-1" and first["value"]["occurred_at"].startswith("2026-")
    assert second["framing"] == "confluent" and second["schema"] == {"name": "OrderPlaced", "version": 1, "id": 1}
    assert second["value"]["total_cents"] == 200 and second["headers"] == {"origin": {"hex": "ff00"}}
    assert third["error"]["reason"] == "not_avro" and third["value_preview"] == {"hex": b"\x01 not avro".hex()}
    assert "value" not in third


def test_tail_limit_and_the_last_records(filled: Settings):
    assert [r["offset"] for r in lines(herald(filled, "tail", filled.topic("events"), "--from-beginning", "--limit", "2"))] == [0, 1]
    assert [r["offset"] for r in lines(herald(filled, "tail", "events"))] == [0, 1, 2]  # fewer than the last 10: all


def test_tail_follow_prints_records_as_they_arrive(filled: Settings):
    env = {**os.environ, **settings_env(filled)}
    proc = subprocess.Popen([sys.executable, "-m", "infra.tools.cli.main", "tail", "events", "--follow", "--limit", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(6)  # tail is reading; the three present records are printed at once
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        p = KafkaProducer({"bootstrap.servers": filled.kafka_bootstrap})
        p.produce(filled.topic("events"), Codec().encode("OrderPlaced", order(4)), key=b"u4", partition=1)
        assert p.flush(30) == 0
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = [json.loads(line) for line in stdout.splitlines()]
    assert [r["key"] for r in out] == ["u1", "u2", "u3", "u4"], stderr
    assert out[-1]["value"]["order_id"] == "o-4" and out[-1]["partition"] == 1


def test_tail_of_a_topic_that_does_not_exist_names_herald_topics(topics: Settings):
    done = herald(topics, "tail", "nope")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "no topic nope" in done.stderr and "events" in done.stderr and len(done.stderr.strip().splitlines()) == 1
