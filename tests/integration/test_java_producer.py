"""An OrderPlaced from a Java service: Apache Avro's BinaryMessageEncoder (single-object encoding) and the broker's
own kafka-clients producer, compiled with javac by the test, is emailed and marked sent; the partition Java's
default partitioner chose for the user id is the one Herald's writers (murmur2) choose."""
from __future__ import annotations

import uuid
from importlib import resources
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer as KafkaProducer

from infra.kafka.config import producer_config
from infra.tools.sandbox.server import free_port
from infra.tools.seed import seed_templates
from tests.support.javaprog import compile_program, run_program
from tests.support.sandbox import sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration


def _status(db: psycopg.Connection, event_id: str) -> str | None:
    row = db.execute("SELECT status FROM notifications WHERE id = %s", (event_id,)).fetchone()
    return row[0] if row else None


def test_an_order_from_a_java_producer_is_delivered(sandbox, db, worker_factory, tmp_path: Path):
    seed_templates(db)
    settings = sandbox.settings.model_copy(update={"email_provider": "smtp", "metrics_port": free_port()})
    uid = f"u-java-{uuid.uuid4().hex[:8]}"
    email = f"{uid}@example.org"
    db.execute("INSERT INTO users (id, email, locale, time_zone, first_name) VALUES (%s, %s, 'en', 'UTC', 'Duke')", (uid, email))
    cp = compile_program(settings, "EmitOrder", tmp_path / "classes")
    worker_factory(settings, agents=["route", "deliver-email", "status"])
    event_id, order_id = f"java-{uuid.uuid4().hex[:10]}", f"o-java-{uuid.uuid4().hex[:6]}"
    with resources.as_file(resources.files("schemas") / "avro" / "events" / "OrderPlaced.v1.avsc") as avsc:
        partition = int(run_program(cp, "EmitOrder", settings.kafka_bootstrap, settings.topic("events"), str(avsc), uid,
                                    event_id, order_id).strip().splitlines()[-1])

    mail = wait_for(lambda: sandbox.control.inbox("email", to=email), 90, message="the email of the Java producer's event")[0]
    assert order_id in mail["subject"] and "3 x Java mug: 36.00 EUR" in mail["text"]
    wait_for(lambda: _status(db, event_id) == "sent", 60, message="sent in PostgreSQL")

    # Herald's writers put the same key on the same partition (murmur2, as Java's default partitioner): a probe on the
    # bulk topic, which has as many partitions as the events topic and no agent running in this test
    chosen: list[int] = []
    p = KafkaProducer(producer_config(settings))
    p.produce(settings.topic("bulk"), b"probe", key=uid.encode(), on_delivery=lambda err, m: chosen.append(m.partition()))
    p.flush(30)
    assert chosen == [partition]
