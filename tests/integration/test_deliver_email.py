"""The deliver-email agent sends Delivery records to the provider, once, and reports them sent."""
from __future__ import annotations

import pytest

from infra.kafka.producer import Producer
from infra.topics import deliver_topic
from schemas.codec import Codec
from tests.support.sandbox import delivery, delivery_record, sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("provider", ["smtp", "sendgrid"])
def test_email_delivery_is_sent_once_and_ledger_and_status_say_sent(provider, sandbox, db, worker_factory):
    settings = sandbox.settings.model_copy(update={"email_provider": provider})
    codec, out = Codec(), Producer(settings)
    topic = deliver_topic(settings, "email")
    ds = [delivery("email") for _ in range(20)]
    # the same delivery twice (an upstream re-delivery): one message only
    out.send_all_blocking([delivery_record(codec, topic, d) for d in ds] + [delivery_record(codec, topic, ds[0])])
    worker_factory(settings, agents=["deliver-email", "status"])

    def sent_rows():
        return db.execute("SELECT delivery_id, provider_message_id FROM delivery_state WHERE status='sent' AND delivery_id = ANY(%s)",
                          ([d["delivery_id"] for d in ds],)).fetchall()

    rows = wait_for(lambda: len(sent_rows()) == 20 and sent_rows(), 90, message="20 sent ledger rows")
    assert all(pmid for _, pmid in rows)
    wait_for(lambda: db.execute("SELECT count(*) FROM notifications WHERE status='sent' AND id = ANY(%s)",
                                ([d["notification_id"] for d in ds],)).fetchone()[0] == 20, 60, message="status sent")
    inbox = sandbox.control.inbox("email")
    assert sorted(m["to"] for m in inbox) == sorted(d["address"] for d in ds)
    first = next(m for m in inbox if m["to"] == ds[0]["address"])
    assert first["subject"] == "Reset your password"
    assert first["text"].strip() == ds[0]["text"]
    hist = db.execute("SELECT provider_message_id, delivery_id, channel FROM status_history WHERE notification_id=%s AND status='sent'",
                      (ds[0]["notification_id"],)).fetchall()
    assert hist and hist[0][1] == ds[0]["delivery_id"] and hist[0][2] == "email" and hist[0][0]
