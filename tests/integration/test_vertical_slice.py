"""Issue #2's vertical slice through the real broker, PostgreSQL and Redis:

OrderPlaced emitted with the SDK → route agent (decode, route, render order_confirmation)
→ deliver-email agent → SMTP sandbox → PostgreSQL says ``sent``; bad input goes to the DLQ
with its reason while the next good event is still delivered; an event written by an
independent Avro library through an independent Kafka client is delivered too.
"""
from __future__ import annotations

import asyncio
import io
import json
import urllib.request
import uuid
from datetime import UTC, datetime
from importlib import resources

import avro.io
import avro.schema
import psycopg
import pytest
from confluent_kafka import Consumer

from infra.kafka.producer import Producer
from infra.kafka.records import OutRecord
from infra.tools.sandbox.server import free_port
from infra.tools.seed import seed_templates
from producers.sdk import Emitter
from schemas.codec import Codec
from tests.support.sandbox import sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration

AGENTS = ["route", "deliver-email", "status"]


def _user(db: psycopg.Connection) -> tuple[str, str]:
    uid = f"u-{uuid.uuid4().hex[:8]}"
    email = f"{uid}@example.org"
    db.execute("INSERT INTO users (id, email, locale, time_zone, first_name) VALUES (%s, %s, 'en', 'Europe/Vienna', 'Ada')", (uid, email))
    return uid, email


def _order(uid: str) -> dict:
    return {
        "user_id": uid, "order_id": f"o-{uuid.uuid4().hex[:6]}", "currency": "EUR", "total_cents": 4490,
        "items": [{"sku": "MUG", "name": "Herald mug", "quantity": 2, "unit_price_cents": 1495},
                  {"sku": "TEE", "name": "Herald tee", "quantity": 1, "unit_price_cents": 1500}],
    }


def _status(db: psycopg.Connection, event_id: str) -> str | None:
    row = db.execute("SELECT status FROM notifications WHERE id = %s", (event_id,)).fetchone()
    return row[0] if row else None


@pytest.fixture
def slice_settings(sandbox, db):
    seed_templates(db)
    return sandbox.settings.model_copy(update={"email_provider": "smtp", "metrics_port": free_port()})


def test_order_placed_is_emailed_and_marked_sent(slice_settings, sandbox, db, worker_factory):
    settings = slice_settings
    uid, email = _user(db)
    order = _order(uid)
    worker_factory(settings, agents=AGENTS)
    with Emitter(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix) as sdk:
        event_id = sdk.emit("OrderPlaced", order)

    mail = wait_for(lambda: sandbox.control.inbox("email", to=email), 90, message="the email in the SMTP sandbox")[0]
    assert mail["provider"] == "smtp"
    assert order["order_id"] in mail["subject"] + mail["text"]
    assert "Herald mug" in mail["text"] and "Herald tee" in mail["text"]
    wait_for(lambda: _status(db, event_id) == "sent", 60, message="notification sent in PostgreSQL")
    ledger = db.execute("SELECT status, address FROM delivery_state WHERE notification_id = %s AND channel = 'email'", (event_id,)).fetchall()
    assert ledger == [("sent", email)]
    # the user has no phone and no device: those channels are skipped with a reason, not lost
    reasons = {r[0]: r[1] for r in db.execute(
        "SELECT channel, reason FROM status_history WHERE notification_id = %s AND status = 'skipped'", (event_id,))}
    assert reasons == {"sms": "no_address", "push": "no_address"}

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=10).read().decode()
    events_in = [line for line in metrics.splitlines() if line.startswith("herald_events_in_total") and settings.topic("events") in line]
    assert events_in and float(events_in[0].rsplit(" ", 1)[1]) >= 1
    assert any(line.startswith("herald_deliveries_total") and 'outcome="sent"' in line and not line.endswith(" 0.0")
               for line in metrics.splitlines())
    assert 'herald_gc_pause_seconds_count{generation="0"}' in metrics   # the worker's collector pauses, observed


def test_bad_input_is_dead_lettered_with_a_reason_and_the_next_event_is_delivered(slice_settings, sandbox, db, worker_factory):
    settings = slice_settings
    uid, email = _user(db)
    codec = Codec()
    receipt = codec.encode("Receipt", {"provider": "smtp", "provider_message_id": "m", "status": "delivered",
                                       "at": datetime.now(UTC)})
    Producer(settings).send_all_blocking([
        OutRecord(settings.topic("events"), uid.encode(), b"not avro at all"),
        # Confluent's framing (00 + a schema id) while no schema registry is configured: a dead letter that says so
        OutRecord(settings.topic("events"), uid.encode(), b"\x00not avro at all"),
        OutRecord(settings.topic("events"), uid.encode(), receipt),  # catalogued, but no route means anything for it
    ])
    worker_factory(settings, agents=AGENTS)
    with Emitter(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix) as sdk:
        good = sdk.emit("OrderPlaced", _order(uid))
    wait_for(lambda: sandbox.control.inbox("email", to=email), 90, message="the good event's email")
    wait_for(lambda: _status(db, good) == "sent", 60, message="good event sent")

    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{settings.app_id}-check", "auto.offset.reset": "earliest"})
    c.subscribe([settings.topic("dlq")])
    dead: list = []
    wait_for(lambda: dead.extend(m for m in c.consume(10, 0.5) if not m.error()) or len(dead) >= 3, 30, message="three dead letters")
    c.close()
    by_class = {dict(m.headers())["herald-dlq-error-class"].decode(): m for m in dead}
    assert set(by_class) == {"not_avro", "no_registry", "no_route"}
    assert by_class["not_avro"].value() == b"not avro at all"          # original bytes untouched
    assert by_class["no_registry"].value() == b"\x00not avro at all"
    assert dict(by_class["no_route"].headers())["herald-dlq-stage"] == b"route"
    assert by_class["no_route"].value() == receipt
    assert dict(by_class["no_route"].headers())["herald-dlq-origin-topic"] == settings.topic("events").encode()


def test_an_event_from_an_independent_avro_library_and_kafka_client_is_delivered(slice_settings, sandbox, db, worker_factory):
    """Apache's ``avro`` package reads the .avsc and writes the body; aiokafka (not librdkafka) sends it."""
    from aiokafka import AIOKafkaProducer

    settings = slice_settings
    uid, email = _user(db)
    text = (resources.files("schemas") / "avro" / "events" / "OrderPlaced.v1.avsc").read_text()
    schema = avro.schema.parse(text)
    body = io.BytesIO()
    event_id = f"apache-{uuid.uuid4().hex[:8]}"
    record = {**_order(uid), "event_id": event_id, "occurred_at": datetime.now(UTC), "shipping_address": None}
    avro.io.DatumWriter(schema).write(record, avro.io.BinaryEncoder(body))
    value = b"\xc3\x01" + schema.fingerprint("CRC-64-AVRO") + body.getvalue()
    assert json.loads(text)["name"] == "OrderPlaced"

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(settings.topic("events"), value, key=uid.encode())
        finally:
            await producer.stop()

    worker_factory(settings, agents=AGENTS)
    asyncio.run(send())
    mail = wait_for(lambda: sandbox.control.inbox("email", to=email), 90, message="the email")[0]
    assert record["order_id"] in mail["subject"] + mail["text"]
    wait_for(lambda: _status(db, event_id) == "sent", 60, message="sent")


def test_an_api_request_with_inline_addresses_reaches_a_user_herald_does_not_store(slice_settings, sandbox, db, worker_factory):
    """Unknown user + inline recipient → 202 and an email to the inline address; a stored user's own address wins."""
    from fastapi.testclient import TestClient

    from producers.api.app import create_api
    from tests.support.api import make_api_key

    settings = slice_settings
    stranger = f"guest-{uuid.uuid4().hex[:8]}"
    known, known_email = _user(db)
    worker_factory(settings, agents=AGENTS)
    auth = {"Authorization": f"Bearer {make_api_key(settings)}"}
    body = {"template": "weekly_digest", "channels": ["email"], "variables": {"headline": "Inline works"}}
    with TestClient(create_api(settings)) as client:
        assert client.post("/v1/notifications", json={**body, "user_id": stranger}, headers=auth).json()["code"] == "unknown_user"
        r = client.post("/v1/notifications", headers=auth, json={
            **body, "user_id": stranger, "recipient": {"email": f"{stranger}@inline.example", "first_name": "Gus"}})
        assert r.status_code == 202, r.text
        other = client.post("/v1/notifications", headers=auth, json={
            **body, "user_id": known, "recipient": {"email": "not-this-one@inline.example"}})
        assert other.status_code == 202, other.text
    mail = wait_for(lambda: sandbox.control.inbox("email", to=f"{stranger}@inline.example"), 90, message="the inline address")[0]
    assert "Inline works" in mail["text"] and "Hi Gus" in mail["text"]
    wait_for(lambda: sandbox.control.inbox("email", to=known_email), 90, message="the stored user's own address")
    assert not sandbox.control.inbox("email", to="not-this-one@inline.example")


def test_an_upstream_traceparent_is_stored_with_the_notification_and_answered_by_the_status_api(
        slice_settings, sandbox, db, worker_factory):
    """POST with a W3C traceparent → its trace-id travels route → deliver → status, is stored in the notification's
    row and answered by GET /v1/notifications/{id}."""
    from fastapi.testclient import TestClient

    from producers.api.app import create_api
    from tests.support.api import make_api_key

    settings = slice_settings
    uid, _email = _user(db)
    trace = uuid.uuid4().hex
    worker_factory(settings, agents=AGENTS)
    auth = {"Authorization": f"Bearer {make_api_key(settings)}"}
    body = {"user_id": uid, "template": "weekly_digest", "channels": ["email"], "variables": {"headline": "Traced"}}
    with TestClient(create_api(settings)) as client:
        r = client.post("/v1/notifications", json=body, headers={**auth, "traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
        assert r.status_code == 202, r.text
        assert r.json()["trace_id"] == r.headers["X-Trace-Id"] == trace
        nid = r.json()["id"]
        wait_for(lambda: _status(db, nid) == "sent", 90, message="sent")
        view = client.get(f"/v1/notifications/{nid}", headers=auth).json()
    assert view["trace_id"] == trace
    assert db.execute("SELECT trace_id FROM notifications WHERE id = %s", (nid,)).fetchone() == (trace,)
