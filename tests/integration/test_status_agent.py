"""The status agent writes StatusChange records to PostgreSQL in batches and never moves a status backwards."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from infra.kafka.producer import Producer
from schemas.codec import Codec
from streams.stages.status_change import status_record
from tests.support import status_scenarios
from tests.support.status_world import open_world
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration


def test_status_never_moves_backwards_and_history_keeps_everything(topics, db, worker_factory):
    settings = topics
    codec, out = Codec(), Producer(settings)
    nid = f"n-{uuid.uuid4().hex[:8]}"
    topic = settings.topic("status")

    def change(status: str, at: int):
        return status_record(codec, topic, notification_id=nid, event_id=nid, user_id="u1", status=status,
                             channel="email", event_type="OrderPlaced", at_ms=at)

    # queued, then delivered, then a late "sent" (out of order, as receipts can be)
    out.send_all_blocking([change("queued", 1_000), change("delivered", 3_000), change("sent", 2_000)])
    worker_factory(settings, agents=["status"])

    def history():
        return db.execute("SELECT status FROM status_history WHERE notification_id=%s ORDER BY id", (nid,)).fetchall()

    rows = wait_for(lambda: len(history()) == 3 and history(), timeout=60, message="three history rows")
    assert [r[0] for r in rows] == ["queued", "delivered", "sent"]
    assert db.execute("SELECT status FROM notifications WHERE id=%s", (nid,)).fetchone()[0] == "delivered"


def test_undecodable_status_goes_to_the_dlq_and_the_next_one_is_written(topics, db, worker_factory):
    from confluent_kafka import Consumer

    settings = topics
    codec, out = Codec(), Producer(settings)
    nid = f"n-{uuid.uuid4().hex[:8]}"
    from infra.kafka.records import OutRecord

    out.send_all_blocking([
        OutRecord(settings.topic("status"), b"k", b"garbage"),
        status_record(codec, settings.topic("status"), notification_id=nid, event_id=nid, user_id="u1", status="sent"),
    ])
    worker_factory(settings, agents=["status"])
    wait_for(lambda: db.execute("SELECT 1 FROM notifications WHERE id=%s", (nid,)).fetchone(), 60, message="status row")
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": settings.app_id + "-check", "auto.offset.reset": "earliest"})
    c.subscribe([settings.topic("dlq")])
    msg = wait_for(lambda: (m := c.poll(0.5)) is not None and not m.error() and m, 30, message="dlq record")
    headers = dict(msg.headers())
    c.close()
    assert msg.value() == b"garbage"
    assert headers["herald-dlq-stage"] == b"decode"
    assert headers["herald-dlq-error-class"] == b"not_avro"
    assert headers["herald-dlq-origin-topic"] == settings.topic("status").encode()


STATUS_SCENARIOS = [
    status_scenarios.changes_in_any_order_end_at_the_highest_rank,
    status_scenarios.changes_in_any_order_across_batches_end_at_the_highest_rank,
    # the "never backwards" guard across batches: fails against PostgreSQL when the UPSERT's WHERE is removed
    status_scenarios.a_lower_status_in_a_later_batch_does_not_move_it_backwards,
    # fails against PostgreSQL without migration 008's index and the sent-once insert
    status_scenarios.a_delivery_said_sent_again_adds_no_second_history_row,
    # fail against PostgreSQL without migration 011 and the UPSERT's trace_id (first non-null wins)
    status_scenarios.a_notification_keeps_the_first_trace_id_its_changes_name,
    status_scenarios.a_status_record_without_a_trace_id_takes_its_headers,
]


@pytest.mark.parametrize("world_kind", ["memory", "real"])
@pytest.mark.parametrize("scenario", STATUS_SCENARIOS, ids=lambda s: s.__name__)
def test_status_handler_over_the_twin_and_postgresql(settings, world_kind, scenario):
    async def run() -> None:
        async with open_world(world_kind, settings, Codec()) as world:
            await scenario(world)

    asyncio.run(run())
