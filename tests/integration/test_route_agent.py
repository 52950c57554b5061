"""The route agent against the real Kafka, Redis and PostgreSQL: events in, Deliveries / statuses / dead letters out."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer

from infra.seed import seed_templates
from infra.settings import Settings
from infra.topics import deliver_topic
from schemas.codec import Codec
from streams.output import Output
from streams.records import TRACE, OutRecord
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration


# --- helpers (also used by the other test_route_* integration files) ---------------

class TopicReader:
    """Reads every record of some topics from the beginning, decoding values when they are Avro."""

    def __init__(self, settings: Settings, topics: list[str]) -> None:
        self.codec = Codec()
        self.c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{settings.app_id}-r-{uuid.uuid4().hex[:6]}",
                           "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.c.subscribe(topics)
        self.records: list[dict[str, Any]] = []

    def poll(self, seconds: float = 0.5) -> list[dict[str, Any]]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            msgs = self.c.consume(500, 0.2)
            for m in msgs:
                if m.error():
                    continue
                item: dict[str, Any] = {"topic": m.topic(), "key": m.key(), "raw": m.value(), "headers": dict(m.headers() or [])}
                try:
                    d = self.codec.decode(m.value())
                    item["name"], item["value"] = d.name, d.record
                except Exception:  # noqa: BLE001 - dead letters keep the original (maybe garbage) bytes
                    item["name"], item["value"] = None, None
                self.records.append(item)
        return self.records

    def wait(self, check, timeout: float = 60, message: str = "records"):
        return wait_for(lambda: check(self.poll(0.3)), timeout, interval=0.05, message=message)

    def close(self) -> None:
        self.c.close()


def statuses(records: list[dict], event_id: str) -> list[tuple[str | None, str, str | None]]:
    return sorted(
        (r["value"]["channel"], r["value"]["status"], r["value"]["reason"])
        for r in records if r["name"] == "StatusChange" and r["value"]["event_id"] == event_id
    )


def deliveries(records: list[dict], event_id: str) -> list[dict]:
    return [r["value"] for r in records if r["name"] == "Delivery" and r["value"]["event_id"] == event_id]


def add_user(db: psycopg.Connection, user_id: str, *, email: str | None = "u@example.test", phone: str | None = None,
             locale: str = "en", tz: str = "UTC", first_name: str = "Ada", devices: list[str] = ()) -> None:
    db.execute("INSERT INTO users (id, email, phone, locale, time_zone, first_name) VALUES (%s,%s,%s,%s,%s,%s)",
               (user_id, email, phone, locale, tz, first_name))
    for tok in devices:
        db.execute("INSERT INTO devices (user_id, token, platform) VALUES (%s, %s, 'android')", (user_id, tok))


def order_placed(user_id: str, event_id: str | None = None, occurred_ms: int | None = None) -> dict:
    return {
        "event_id": event_id or f"e-{uuid.uuid4().hex[:12]}",
        "occurred_at": occurred_ms if occurred_ms is not None else int(time.time() * 1000),
        "user_id": user_id, "order_id": "A-1001", "currency": "EUR", "total_cents": 4550,
        "items": [{"sku": "mug", "name": "Mug", "quantity": 2, "unit_price_cents": 1275},
                  {"sku": "tee", "name": "T-Shirt", "quantity": 1, "unit_price_cents": 2000}],
        "shipping_address": {"line1": "Main St 1", "city": "Vienna", "postal_code": "1010", "country": "AT"},
    }


def emit(settings: Settings, name: str, record: dict, topic: str = "events", trace: str | None = None) -> None:
    value = Codec().encode(name, record)
    headers = [(TRACE, trace.encode())] if trace else []
    Output(settings.kafka_bootstrap).send_all_blocking([OutRecord(settings.topic(topic), record["user_id"].encode(), value, headers)])


def emit_raw(settings: Settings, value: bytes, key: bytes = b"k", topic: str = "events") -> None:
    Output(settings.kafka_bootstrap).send_all_blocking([OutRecord(settings.topic(topic), key, value)])


@pytest.fixture
def route_env(topics, db):
    seed_templates(db)
    return topics


# --- the tests -----------------------------------------------------------------

def test_order_placed_becomes_rendered_deliveries_on_every_channel(route_env, db, worker_factory):
    settings = route_env
    uid = f"u-{uuid.uuid4().hex[:8]}"
    add_user(db, uid, email="ada@example.test", phone="+4366412345", locale="de-AT", devices=["tok-a", "tok-b"])
    ev = order_placed(uid)
    emit(settings, "OrderPlaced", ev, trace="trace-123")
    reader = TopicReader(settings, [deliver_topic(settings, ch) for ch in ("email", "sms", "push")] + [settings.topic("status")])
    worker_factory(settings, agents=["route"])
    recs = reader.wait(lambda rs: len(deliveries(rs, ev["event_id"])) == 4 and len(statuses(rs, ev["event_id"])) == 4 and rs,
                       message="4 deliveries and 4 queued statuses")
    reader.close()
    ds = {(d["channel"], d["address"]): d for d in deliveries(recs, ev["event_id"])}
    assert set(ds) == {("email", "ada@example.test"), ("sms", "+4366412345"), ("push", "tok-a"), ("push", "tok-b")}
    email = ds[("email", "ada@example.test")]
    # de-AT falls back to the de template; line items rendered; HTML escaped, text part present
    assert email["locale"] == "de" and email["subject"] == "Deine Bestellung A-1001 ist bestätigt"
    assert "2 x Mug: 25.50 EUR" in email["text"] and "1 x T-Shirt: 20.00 EUR" in email["text"]
    assert "<li>2 &times; Mug: 25.50 EUR</li>" in email["html"]
    assert email["notification_id"] == ev["event_id"] and email["category"] == "transactional" and email["lane"] == "interactive"
    assert ds[("sms", "+4366412345")]["sms_segments"] == 1
    push = ds[("push", "tok-a")]
    assert push["push_title"] == "Bestellung A-1001 bestätigt" and push["push_data"]["notification_id"] == ev["event_id"]
    assert len({d["delivery_id"] for d in ds.values()}) == 4
    by_topic = {r["topic"] for r in recs if r["name"] == "Delivery"}
    assert by_topic == {deliver_topic(settings, ch) for ch in ("email", "sms", "push")}
    assert all(r["key"] == uid.encode() and r["headers"][TRACE] == b"trace-123" for r in recs if r["name"] == "Delivery")
    assert statuses(recs, ev["event_id"]) == [("email", "queued", None), ("push", "queued", None),
                                             ("push", "queued", None), ("sms", "queued", None)]


def test_bad_input_is_dead_lettered_with_its_reason_and_the_next_event_flows(route_env, db, worker_factory):
    settings = route_env
    uid = f"u-{uuid.uuid4().hex[:8]}"
    add_user(db, uid)
    emit_raw(settings, b"not avro at all")
    # a catalogued record with no route: Receipt is Herald's own record, never routed
    emit_raw(settings, Codec().encode("Receipt", {"provider": "x", "provider_message_id": "m", "status": "delivered",
                                                  "hard_bounce": False, "reason": None, "at": 0}))
    ev = order_placed(uid)
    emit(settings, "OrderPlaced", ev)
    reader = TopicReader(settings, [settings.topic("dlq"), deliver_topic(settings, "email")])
    worker_factory(settings, agents=["route"])
    recs = reader.wait(lambda rs: len([r for r in rs if r["topic"].endswith("dlq")]) == 2 and deliveries(rs, ev["event_id"]) and rs,
                       message="2 dead letters and the good event's delivery")
    reader.close()
    dead = {(r["headers"]["herald-dlq-stage"], r["headers"]["herald-dlq-error-class"]) for r in recs if r["topic"].endswith("dlq")}
    assert dead == {(b"decode", b"not_avro"), (b"route", b"no_route")}
    assert any(r["raw"] == b"not avro at all" for r in recs)


def test_request_records_bring_template_channels_and_variables(route_env, db, worker_factory):
    settings = route_env
    uid = f"u-{uuid.uuid4().hex[:8]}"
    add_user(db, uid, devices=["tok-w"])
    req = {"event_id": f"n-{uuid.uuid4().hex[:8]}", "occurred_at": int(time.time() * 1000), "user_id": uid,
           "template": "weekly_digest", "channels": ["email", "push"], "category": "marketing",
           "variables_json": json.dumps({"headline": "Big <news>", "highlights": ["one", "two"]}),
           "send_at": None, "ttl_seconds": None}
    emit(settings, "NotificationRequested", req)
    camp = {"event_id": f"c1:{uid}", "occurred_at": int(time.time() * 1000), "campaign_id": "c1", "user_id": uid,
            "template": "weekly_digest", "channels": ["email"], "category": "marketing", "variables_json": "{}"}
    emit(settings, "CampaignMessage", camp, topic="bulk")
    reader = TopicReader(settings, [deliver_topic(settings, "email"), deliver_topic(settings, "push"), deliver_topic(settings, "email", "bulk")])
    worker_factory(settings, agents=["route", "route-bulk"])
    recs = reader.wait(lambda rs: len(deliveries(rs, req["event_id"])) == 2 and deliveries(rs, camp["event_id"]) and rs,
                       message="request and campaign deliveries")
    reader.close()
    email = next(d for d in deliveries(recs, req["event_id"]) if d["channel"] == "email")
    assert "Big <news>" in email["text"] and "Big &lt;news&gt;" in email["html"] and "- two" in email["text"]
    bulk = deliveries(recs, camp["event_id"])[0]
    assert bulk["lane"] == "bulk" and bulk["campaign_id"] == "c1" and "Here is what happened this week." in bulk["text"]
    assert {r["topic"] for r in recs if r["name"] == "Delivery" and r["value"]["event_id"] == camp["event_id"]} == {
        deliver_topic(settings, "email", "bulk")}
