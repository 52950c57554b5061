"""Events from any Kafka client, through the real broker, the registry sandbox and a worker subprocess.

* An ``OrderPlaced`` written by confluent-kafka's own ``AvroSerializer`` (Confluent's wire format,
  the schema registered by the serializer) is emailed and marked ``sent``.
* The registry's outcomes: an unknown schema id and a writer Herald cannot read are dead letters
  with their reasons; while the registry is away a fine record waits (no dead letter) and is
  delivered once it is back.
* A new version registered upstream (a new optional field) is used at run time, the field
  available to the template; ``HERALD_SCHEMAS_DIR`` does the same for single-object encoding.
"""
from __future__ import annotations

import copy
import io
import json
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Producer as KafkaProducer
from confluent_kafka.schema_registry import SchemaRegistryClient, record_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from fastavro import parse_schema, schemaless_writer

from infra.settings import SchemaRegistryConfig, Settings
from infra.tools.sandbox.registry import RunningRegistry, running_registry
from infra.tools.sandbox.server import free_port
from infra.tools.seed import seed_templates
from producers.sdk import Emitter
from schemas.catalog import load_catalog
from tests.support.sandbox import sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration

AGENTS = ["route", "deliver-email", "status"]
AUTH = ("herald", "registry-sandbox-password")
ORDER = load_catalog().latest("OrderPlaced").raw
GIFT_NOTE = {"name": "gift_note", "type": ["null", "string"], "default": None}
# a template of a locale no other test uses, so that the session's shared template table is not disturbed
GIFT_TEMPLATE = ("Order {{ order_id }}{% if gift_note is defined and gift_note %}, gift note: {{ gift_note }}{% endif %}.")


@pytest.fixture
def registry():
    with running_registry("127.0.0.1", free_port(), auth=AUTH) as reg:
        yield reg


@pytest.fixture
def reg_settings(sandbox, db, registry: RunningRegistry) -> Settings:
    seed_templates(db)
    db.execute("INSERT INTO templates (code, channel, locale, version, subject, body_text, active) "
               "VALUES ('order_confirmation', 'email', 'eo', 1, 'Order {{ order_id }}', %s, true) ON CONFLICT DO NOTHING",
               (GIFT_TEMPLATE,))
    return sandbox.settings.model_copy(update={
        "email_provider": "smtp", "metrics_port": free_port(),
        "schema_registry": SchemaRegistryConfig(url=registry.url, username=AUTH[0], password=AUTH[1], timeout=2),
    })


def _user(db: psycopg.Connection, locale: str = "en") -> tuple[str, str]:
    uid = f"u-{uuid.uuid4().hex[:8]}"
    email = f"{uid}@example.org"
    db.execute("INSERT INTO users (id, email, locale, time_zone, first_name) VALUES (%s, %s, %s, 'Europe/Vienna', 'Ada')",
               (uid, email, locale))
    return uid, email


def _order(uid: str, **kw) -> dict:
    return {"event_id": f"cf-{uuid.uuid4().hex[:10]}", "occurred_at": int(time.time() * 1000), "user_id": uid,
            "order_id": f"o-{uuid.uuid4().hex[:6]}", "currency": "EUR", "total_cents": 1990,
            "items": [{"sku": "MUG", "name": "Registry mug", "quantity": 1, "unit_price_cents": 1990}],
            "shipping_address": None, **kw}


def _status(db: psycopg.Connection, event_id: str) -> str | None:
    row = db.execute("SELECT status FROM notifications WHERE id = %s", (event_id,)).fetchone()
    return row[0] if row else None


def serialize(registry: RunningRegistry, schema: dict, record: dict, topic: str) -> bytes:
    """What a service using confluent-kafka's AvroSerializer writes (RecordNameStrategy, auto-registration)."""
    client = SchemaRegistryClient({"url": registry.url, "basic.auth.user.info": ":".join(AUTH)})
    ser = AvroSerializer(client, json.dumps(schema), conf={"subject.name.strategy": record_subject_name_strategy})
    return ser(record, SerializationContext(topic, MessageField.VALUE))


def produce(settings: Settings, records: list[tuple[str, bytes]]) -> None:
    """A plain librdkafka producer, as an upstream service has: key = the user id's bytes."""
    p = KafkaProducer({"bootstrap.servers": settings.kafka_bootstrap, "acks": "all"})
    for key, value in records:
        p.produce(settings.topic("events"), value=value, key=key.encode())
    assert p.flush(30) == 0


def dead_letters(settings: Settings, seconds: float) -> list:
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{settings.app_id}-dlq-{uuid.uuid4().hex[:6]}",
                  "auto.offset.reset": "earliest"})
    c.subscribe([settings.topic("dlq")])
    out: list = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out += [m for m in c.consume(50, 0.5) if not m.error()]
    c.close()
    return out


def test_an_order_from_confluents_avro_serializer_is_delivered(reg_settings, registry, sandbox, db, worker_factory):
    settings = reg_settings
    uid, email = _user(db)
    order = _order(uid)
    value = serialize(registry, ORDER, order, settings.topic("events"))
    assert value[0] == 0 and registry.state.subjects == {"shop.events.OrderPlaced": [1]}
    worker_factory(settings, agents=AGENTS)
    produce(settings, [(uid, value)])
    mail = wait_for(lambda: sandbox.control.inbox("email", to=email), 90, message="the email")[0]
    assert order["order_id"] in mail["subject"] and "Registry mug" in mail["text"]
    wait_for(lambda: _status(db, order["event_id"]) == "sent", 60, message="sent in PostgreSQL")
    assert registry.state.requests["GET schemas"] == 1  # the worker asked for the id once


def test_unknown_ids_and_unreadable_writers_are_dead_letters_and_an_outage_only_waits(
        reg_settings, registry, sandbox, db, worker_factory):
    settings = reg_settings
    uid, email = _user(db)
    good = _order(uid)
    good_value = serialize(registry, ORDER, good, settings.topic("events"))
    # a writer Herald's reader cannot read: total_cents as a string (its team set the subject's level to NONE)
    odd = copy.deepcopy(ORDER)
    next(f for f in odd["fields"] if f["name"] == "total_cents")["type"] = "string"
    SchemaRegistryClient({"url": registry.url, "basic.auth.user.info": ":".join(AUTH)}).set_compatibility(
        "shop.events.OrderPlaced", "NONE")
    odd_value = serialize(registry, odd, _order(uid, total_cents="19.90"), settings.topic("events"))
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(copy.deepcopy(ORDER)), _order(uid))
    unknown_value = b"\x00" + (4242).to_bytes(4, "big") + body.getvalue()

    registry.stop()  # the registry goes away before the worker has seen any id
    produce(settings, [(uid, good_value), (uid, unknown_value), (uid, odd_value)])
    worker = worker_factory(settings, agents=AGENTS).wait_ready()
    wait_for(lambda: "RegistryUnavailable" in worker.log_text(), 60, message="the worker to meet the outage")
    assert not dead_letters(settings, 8), "a record was dead-lettered while the registry was away"
    assert not sandbox.control.inbox("email", to=email)

    registry.start()
    mail = wait_for(lambda: sandbox.control.inbox("email", to=email), 90, message="the good event's email")
    assert len(mail) == 1 and good["order_id"] in mail[0]["subject"]
    wait_for(lambda: _status(db, good["event_id"]) == "sent", 60, message="sent")
    def two_dead() -> list | None:
        found = dead_letters(settings, 2)
        return found if len(found) >= 2 else None

    dead = wait_for(two_dead, 60, message="two dead letters")
    by_class = {dict(m.headers())["herald-dlq-error-class"].decode(): m for m in dead}
    assert set(by_class) == {"unknown_schema_id", "incompatible_schema"}
    assert by_class["unknown_schema_id"].value() == unknown_value and by_class["incompatible_schema"].value() == odd_value
    assert "total_cents" in dict(by_class["incompatible_schema"].headers())["herald-dlq-error"].decode()


def test_a_new_version_registered_upstream_reaches_the_template_without_a_release(
        reg_settings, registry, sandbox, db, worker_factory, tmp_path: Path):
    settings = reg_settings
    uid, email = _user(db, locale="eo")
    v2 = copy.deepcopy(ORDER)
    v2["fields"].append(GIFT_NOTE)
    order = _order(uid, gift_note="Happy birthday, Ada!")
    value = serialize(registry, v2, order, settings.topic("events"))  # the serializer registers v2 (BACKWARD: it reads v1)
    worker_factory(settings, agents=AGENTS)
    produce(settings, [(uid, value)])
    mail = wait_for(lambda: sandbox.control.inbox("email", to=email), 90, message="the email")[0]
    assert mail["text"].strip() == f"Order {order['order_id']}, gift note: Happy birthday, Ada!."
    assert registry.state.subjects == {"shop.events.OrderPlaced": [1]}  # v2 is the only version: Herald's catalog has v1


def test_schemas_dir_adds_a_version_for_single_object_producers(reg_settings, sandbox, db, worker_factory, tmp_path: Path):
    """HERALD_SCHEMAS_DIR: an upstream team's OrderPlaced.v2.avsc beside the packaged v1, for the SDK and the worker."""
    v2 = copy.deepcopy(ORDER)
    v2["fields"].append(GIFT_NOTE)
    (tmp_path / "OrderPlaced.v2.avsc").write_text(json.dumps(v2))
    settings = reg_settings.model_copy(update={"schemas_dir": tmp_path})
    uid, email = _user(db, locale="eo")
    worker_factory(settings, agents=AGENTS)
    with Emitter(settings=settings, topic_prefix=settings.topic_prefix) as sdk:
        order = {k: v for k, v in _order(uid, gift_note="From the folder").items() if k not in ("event_id", "occurred_at")}
        event_id = sdk.emit("OrderPlaced", order)
    mail = wait_for(lambda: sandbox.control.inbox("email", to=email), 90, message="the email")[0]
    assert mail["text"].strip().endswith(", gift note: From the folder.")
    wait_for(lambda: _status(db, event_id) == "sent", 60, message="sent")
