"""Receipts close the loop: a signed SendGrid webhook → receipts agent → status agent → PostgreSQL; a hard bounce marks the address."""
from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis
from fastapi.testclient import TestClient

from infra.kafka.producer import Producer
from infra.kafka.records import OutRecord
from producers.api import create_api
from schemas.codec import Codec
from streams.runtime.hold_loop import tier_agent_name
from streams.stores.recipients import recipient_key
from tests.support import status_scenarios
from tests.support.api import SendGridSigner, read_topic
from tests.support.status_world import open_world
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration


def seed(db, nid: str, user: str, email: str, pmid: str, status: str = "sent", bulk: bool = False) -> None:
    """A sent email; ``bulk``: recorded as the bulk lane does, by its sent-once history row (the ledger row 'claimed')."""
    db.execute("INSERT INTO users (id, email) VALUES (%s, %s)", (user, email))
    db.execute("INSERT INTO notifications (id, event_id, event_type, user_id, status, status_rank) VALUES (%s, %s, 'OrderPlaced', %s, %s, 50)",
               (nid, "ev-" + nid, user, status))
    if bulk:
        db.execute("INSERT INTO deliveries (delivery_id, notification_id, channel, address, status)"
                   " VALUES (%s, %s, 'email', %s, 'claimed')", ("d-" + nid, nid, email))
        db.execute("INSERT INTO status_history (notification_id, channel, status, delivery_id, provider_message_id)"
                   " VALUES (%s, 'email', 'sent', %s, %s)", (nid, "d-" + nid, pmid))
        return
    db.execute("INSERT INTO deliveries (delivery_id, notification_id, channel, address, status, provider_message_id, sent_at)"
               " VALUES (%s, %s, 'email', %s, 'sent', %s, now())", ("d-" + nid, nid, email, pmid))


def test_webhook_receipts_move_status_and_hard_bounce_marks_the_address(topics, db, worker_factory):
    signer = SendGridSigner()
    settings = topics.model_copy(update={"sendgrid_webhook_public_key": signer.public_b64})
    tag = settings.topic_prefix
    # two recipients of one SendGrid request share the message id; a third message is elsewhere
    seed(db, f"{tag}-n1", f"{tag}-u1", "one@example.com", "SGBATCH")
    seed(db, f"{tag}-n2", f"{tag}-u2", "Two@Example.com", "SGBATCH", bulk=True)   # found by its history row
    seed(db, f"{tag}-n3", f"{tag}-u3", "three@example.com", "SGOTHER")
    r = redis.Redis.from_url(settings.redis_dsn)
    r.set(recipient_key(settings, f"{tag}-u2"), b"cached")
    now = int(time.time())
    events = [
        {"event": "delivered", "email": "one@example.com", "sg_message_id": "SGBATCH.f1", "timestamp": now},
        {"event": "open", "email": "one@example.com", "sg_message_id": "SGBATCH.f1", "timestamp": now + 5},
        {"event": "bounce", "type": "bounce", "email": "two@example.com", "sg_message_id": "SGBATCH.f2", "reason": "550 5.1.1", "timestamp": now},
        {"event": "delivered", "email": "three@example.com", "sg_message_id": "SGOTHER.f1", "timestamp": now + 1},
        {"event": "delivered", "email": "x@example.com", "sg_message_id": "SGUNKNOWN.f1", "timestamp": now},
    ]
    payload = json.dumps(events).encode()
    with TestClient(create_api(settings)) as client:
        resp = client.post("/v1/webhooks/sendgrid", content=payload, headers=signer.headers(payload))
        assert resp.status_code == 200 and resp.json()["accepted"] == 5
    # a late "delivered" for n1 after "opened" must not move it back
    Producer(settings).send_all_blocking([OutRecord(
        settings.topic("receipts"), b"SGBATCH",
        Codec().encode("Receipt", {"provider": "sendgrid", "provider_message_id": "SGBATCH", "status": "delivered",
                                   "at": (now - 10) * 1000, "address": "one@example.com"}),
    )])
    # with the retry tiers: a receipt whose delivery Herald never sent climbs them before it is dead-lettered
    worker_factory(settings, agents=["receipts", "status", *(tier_agent_name(d) for d in settings.retry_delays)])

    def statuses():
        return dict(db.execute("SELECT id, status FROM notifications WHERE id LIKE %s", (f"{tag}-%",)).fetchall())

    want = {f"{tag}-n1": "opened", f"{tag}-n2": "bounced", f"{tag}-n3": "delivered"}
    wait_for(lambda: statuses() == want and db.execute(
        "SELECT count(*) FROM status_history WHERE notification_id = %s", (f"{tag}-n1",)).fetchone()[0] == 3, 90,
        message=f"statuses {want}")
    bounce = db.execute("SELECT reason, provider_message_id, delivery_id FROM status_history WHERE notification_id = %s"
                        " AND status = 'bounced'", (f"{tag}-n2",)).fetchone()
    assert bounce == ("hard bounce: 550 5.1.1", "SGBATCH", f"d-{tag}-n2")
    undeliverable = dict(db.execute("SELECT id, email_undeliverable FROM users WHERE id LIKE %s", (f"{tag}-%",)).fetchall())
    assert undeliverable == {f"{tag}-u1": False, f"{tag}-u2": True, f"{tag}-u3": False}
    assert not r.exists(recipient_key(settings, f"{tag}-u2"))
    # the receipt for a message Herald never sent is dead-lettered with its reason after the retry tiers, not dropped
    [dead] = read_topic(settings, settings.topic("dlq"), 1)
    headers = dict(dead.headers())
    assert headers["herald-dlq-error-class"] == b"unknown_provider_message" and dead.key() == b"SGUNKNOWN"
    assert b"after 3 retries" in headers["herald-dlq-error"]


RECEIPT_SCENARIOS = [
    status_scenarios.a_receipt_for_a_known_delivery_updates_its_status,
    status_scenarios.a_hard_bounce_marks_the_address_and_drops_the_cached_recipient,
    status_scenarios.a_receipt_for_an_unknown_message_id_climbs_the_ladder_then_is_dead_lettered,
]


@pytest.mark.parametrize("world_kind", ["memory", "real"])
@pytest.mark.parametrize("scenario", RECEIPT_SCENARIOS, ids=lambda s: s.__name__)
def test_receipts_handler_over_the_twins_and_the_real_stores(settings, world_kind, scenario):
    async def run() -> None:
        async with open_world(world_kind, settings, Codec()) as world:
            await scenario(world)

    asyncio.run(run())
