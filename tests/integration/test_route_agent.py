"""The route agent against the real Kafka, Redis and PostgreSQL: events in, Deliveries / statuses / dead letters out."""
from __future__ import annotations

import json
import time
import uuid
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer

from infra.kafka.producer import Producer
from infra.kafka.records import TRACE, OutRecord
from infra.settings import Settings
from infra.tools.seed import seed_templates
from infra.topics import deliver_topic
from schemas.codec import Codec
from schemas.records import chunk_deliveries
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
                if item["name"] == "DeliveryChunk":   # the bulk lane's deliveries travel packed: one item each
                    self.records += [{**item, "name": "Delivery", "value": delivery.to_avro()}
                                     for delivery in chunk_deliveries(item["value"])]
                    continue
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
    Producer(settings).send_all_blocking([OutRecord(settings.topic(topic), record["user_id"].encode(), value, headers)])


def emit_raw(settings: Settings, value: bytes, key: bytes = b"k", topic: str = "events") -> None:
    Producer(settings).send_all_blocking([OutRecord(settings.topic(topic), key, value)])


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


def test_render_errors_are_dead_lettered_naming_the_variable_and_a_fixed_template_replays(route_env, db, worker_factory):
    settings = route_env
    uid = f"u-{uuid.uuid4().hex[:8]}"
    add_user(db, uid, phone="+4311")
    code_missing, code_escape = f"broken_{uuid.uuid4().hex[:6]}", f"escape_{uuid.uuid4().hex[:6]}"
    db.execute("INSERT INTO templates (code, channel, locale, version, body_text, active) VALUES (%s,'sms','default',1,%s,true)",
               (code_missing, "Hi {{ user.first_name }}, your code is {{ verification_code }}"))
    db.execute("INSERT INTO templates (code, channel, locale, version, body_text, active) VALUES (%s,'sms','default',1,%s,true)",
               (code_escape, "{{ ''.__class__.__mro__[1].__subclasses__() }}"))

    def request(code: str) -> dict:
        return {"event_id": f"n-{uuid.uuid4().hex[:8]}", "occurred_at": int(time.time() * 1000), "user_id": uid, "template": code,
                "channels": ["sms"], "category": "transactional", "variables_json": "{}", "send_at": None, "ttl_seconds": None}

    missing, escape = request(code_missing), request(code_escape)
    emit(settings, "NotificationRequested", missing)
    emit(settings, "NotificationRequested", escape)
    reader = TopicReader(settings, [settings.topic("dlq"), deliver_topic(settings, "sms")])
    worker_factory(settings, agents=["route"])
    recs = reader.wait(lambda rs: len([r for r in rs if r["topic"].endswith("dlq")]) == 2 and rs, message="two render dead letters")
    dead = {r["value"]["event_id"]: r["headers"] for r in recs if r["topic"].endswith("dlq")}
    assert dead[missing["event_id"]]["herald-dlq-stage"] == b"render"
    assert dead[missing["event_id"]]["herald-dlq-error-class"] == b"render_error"
    assert b"verification_code" in dead[missing["event_id"]]["herald-dlq-error"]
    assert dead[escape["event_id"]]["herald-dlq-error-class"] == b"template_security"
    assert b"__class__" in dead[escape["event_id"]]["herald-dlq-error"]
    assert not deliveries(recs, missing["event_id"]) and not deliveries(recs, escape["event_id"])
    # fix the template (a new active version), replay the dead letter: it is not taken for a duplicate
    db.execute("UPDATE templates SET active = false WHERE code = %s", (code_missing,))
    db.execute("INSERT INTO templates (code, channel, locale, version, body_text, active) VALUES (%s,'sms','default',2,%s,true)",
               (code_missing, "Hi {{ user.first_name }}, your code is {{ verification_code | default('none') }}"))
    time.sleep(5.5)  # template_refresh_seconds
    raw = next(r["raw"] for r in recs if r["topic"].endswith("dlq") and r["value"]["event_id"] == missing["event_id"])
    emit_raw(settings, raw, uid.encode())
    recs = reader.wait(lambda rs: deliveries(rs, missing["event_id"]) and rs, message="the replayed request delivered")
    reader.close()
    d = deliveries(recs, missing["event_id"])
    assert len(d) == 1 and d[0]["text"] == "Hi Ada, your code is none" and d[0]["template_version"] == 2


def test_expired_send_at_and_quiet_hours(route_env, db, worker_factory):
    settings = route_env
    now = int(time.time() * 1000)
    uid = f"u-{uuid.uuid4().hex[:8]}"
    add_user(db, uid, email="q@example.test", phone="+4399", devices=["tok-q"])
    # a quiet window around now (UTC): SMS and push deferred to its end, email not
    db.execute("INSERT INTO preferences (user_id, quiet_start, quiet_end) VALUES (%s, (now() - interval '1 hour')::time, "
               "(now() + interval '1 hour')::time)", (uid,))
    old = order_placed(uid, occurred_ms=now - 2 * 86_400_000)
    quiet = order_placed(uid)
    later = {"event_id": f"b-{uuid.uuid4().hex[:8]}", "occurred_at": now, "user_id": uid, "age": 30, "send_at": now + 20_000}
    emit(settings, "OrderPlaced", old)
    emit(settings, "OrderPlaced", quiet)
    emit(settings, "BirthdayReached", later, trace="t-later")
    reader = TopicReader(settings, [settings.topic("status"), deliver_topic(settings, "email")])
    worker_factory(settings, agents=["route"])
    recs = reader.wait(lambda rs: statuses(rs, old["event_id"]) and len(statuses(rs, quiet["event_id"])) == 3
                       and statuses(rs, later["event_id"]) and rs, message="expired, deferred and scheduled statuses")
    assert statuses(recs, old["event_id"]) == [("email", "expired", "ttl"), ("push", "expired", "ttl"), ("sms", "expired", "ttl")]
    assert statuses(recs, quiet["event_id"]) == [("email", "queued", None), ("push", "deferred", "quiet_hours"),
                                                 ("sms", "deferred", "quiet_hours")]
    assert statuses(recs, later["event_id"]) == [(None, "scheduled", "send_at")]
    rows = db.execute("SELECT kind, topic, key, value, headers, due_at, notification_id FROM scheduled WHERE notification_id IN (%s, %s) "
                      "ORDER BY kind, topic", (quiet["event_id"], later["event_id"])).fetchall()
    assert [(r[0], r[1]) for r in rows] == [("quiet_hours", deliver_topic(settings, "push")), ("quiet_hours", deliver_topic(settings, "sms")),
                                            ("send_at", settings.topic("events"))]
    codec = Codec()
    sms = codec.decode(rows[1][3]).record
    assert sms["channel"] == "sms" and sms["address"] == "+4399" and rows[1][2] == uid.encode()
    end = db.execute("SELECT (now() + interval '1 hour')::time").fetchone()[0]
    assert abs((rows[1][5].time().hour * 60 + rows[1][5].time().minute) - (end.hour * 60 + end.minute)) <= 1
    send_at_row = rows[2]
    assert codec.decode(send_at_row[3]).record["event_id"] == later["event_id"] and send_at_row[4][TRACE] == "t-later"
    # what the scheduler does when due: republish the bytes unchanged; the second pass is not stopped or re-scheduled
    wait_for(lambda: time.time() * 1000 > later["send_at"], 30)
    Producer(settings).send_all_blocking([OutRecord(send_at_row[1], send_at_row[2], bytes(send_at_row[3]),
                                                                  [(k, v.encode()) for k, v in send_at_row[4].items()])])
    recs = reader.wait(lambda rs: deliveries(rs, later["event_id"]) and rs, message="the birthday greeting once due")
    reader.close()
    assert [d["channel"] for d in deliveries(recs, later["event_id"])] == ["email"]
    # (its push is deferred: the quiet window is still on)
    assert db.execute("SELECT kind, count(*) FROM scheduled WHERE notification_id = %s GROUP BY kind ORDER BY kind",
                      (later["event_id"],)).fetchall() == [("quiet_hours", 1), ("send_at", 1)]
