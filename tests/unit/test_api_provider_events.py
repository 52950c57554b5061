"""Provider webhook payloads → Receipt records (pure)."""
from __future__ import annotations

import json

import pytest

from producers.api.provider_events import PayloadError, from_sendgrid, from_twilio
from schemas.codec import Codec

NOW = 1_700_000_000_000


@pytest.mark.parametrize(
    ("event", "status", "hard"),
    [
        ({"event": "delivered"}, "delivered", False),
        ({"event": "open"}, "opened", False),
        ({"event": "click", "url": "https://x"}, "clicked", False),
        ({"event": "bounce", "type": "bounce", "reason": "550 no such user"}, "bounced", True),
        ({"event": "bounce", "type": "blocked", "reason": "mailbox full"}, "bounced", False),
        ({"event": "bounce"}, "bounced", True),
        ({"event": "dropped", "reason": "Bounced Address"}, "bounced", True),
        ({"event": "dropped", "reason": "Unsubscribed Address"}, "failed", False),
    ],
)
def test_sendgrid_events_map_to_receipts(event, status, hard):
    ev = {"email": "a@example.com", "timestamp": 1_700_000_001, "sg_message_id": "abc123.filter0001.1.2", **event}
    t = from_sendgrid([ev], NOW)
    [r] = [receipt.to_avro() for receipt in t.receipts]  # the dict the webhook encodes
    assert (r["status"], r["hard_bounce"]) == (status, hard)
    assert r["provider_message_id"] == "abc123"  # the X-Message-Id part, as the send call returned it
    assert r["at"] == 1_700_000_001_000
    assert r["address"] == "a@example.com"
    Codec().encode("Receipt", r)  # every receipt fits the schema


def test_sendgrid_untracked_events_and_missing_ids_are_skipped_and_counted():
    t = from_sendgrid([
        {"event": "processed", "sg_message_id": "m1"},
        {"event": "deferred", "sg_message_id": "m1"},
        {"event": "delivered"},
        {"sg_message_id": "m1"},
        {"event": "delivered", "sg_message_id": "m2", "herald_delivery_id": "d-9"},
    ], NOW)
    receipts = [receipt.to_avro() for receipt in t.receipts]
    assert [r["provider_message_id"] for r in receipts] == ["m2"]
    assert receipts[0]["delivery_id"] == "d-9"
    assert t.skipped == {"sendgrid:processed": 1, "sendgrid:deferred": 1, "sendgrid:no_message_id": 1, "sendgrid:no_event": 1}


@pytest.mark.parametrize("payload", [{"event": "delivered"}, "x", [1], [["a"]], None])
def test_sendgrid_payload_that_is_not_an_event_array_is_refused(payload):
    with pytest.raises(PayloadError):
        from_sendgrid(payload, NOW)


def test_sendgrid_bad_timestamp_falls_back_to_now():
    [r] = [receipt.to_avro() for receipt in from_sendgrid(
        [{"event": "delivered", "sg_message_id": "m", "timestamp": "yesterday"}], NOW).receipts]
    assert r["at"] == NOW


@pytest.mark.parametrize(
    ("form", "status", "hard"),
    [
        ({"MessageStatus": "delivered"}, "delivered", False),
        ({"MessageStatus": "read"}, "opened", False),
        ({"MessageStatus": "undelivered", "ErrorCode": "30005"}, "bounced", True),
        ({"MessageStatus": "undelivered", "ErrorCode": "30003"}, "bounced", False),
        ({"MessageStatus": "failed", "ErrorCode": "21211"}, "bounced", True),
    ],
)
def test_twilio_status_callbacks_map_to_receipts(form, status, hard):
    [r] = [receipt.to_avro() for receipt in from_twilio({"MessageSid": "SM1", "To": "+436601234567", **form}, NOW).receipts]
    assert (r["status"], r["hard_bounce"], r["provider_message_id"], r["address"]) == (status, hard, "SM1", "+436601234567")
    Codec().encode("Receipt", r)


@pytest.mark.parametrize("kind", ["queued", "sending", "sent", "accepted"])
def test_twilio_progress_statuses_are_skipped(kind):
    t = from_twilio({"MessageSid": "SM1", "MessageStatus": kind}, NOW)
    assert t.receipts == [] and t.skipped == {f"twilio:{kind}": 1}


def test_twilio_callback_without_sid_is_refused():
    with pytest.raises(PayloadError):
        from_twilio({"MessageStatus": "delivered"}, NOW)


def test_sendgrid_receipts_find_each_delivery_when_one_send_holds_two_emails_to_one_address():
    """The webhook reads back the custom_args key the sink sets (it read another one: every receipt was ambiguous)."""
    from schemas.records import Delivery
    from sinks.sendgrid import SendGridSink
    from tests.support.sandbox import delivery

    twice = [Delivery.from_avro(delivery("email", address="ada@example.org")) for _ in range(2)]
    body = json.loads(SendGridSink("SG.test", "http://127.0.0.1:1", "Herald <no-reply@herald.local>")._body(twice, inline=False))
    # SendGrid's event webhook: one event per recipient, the personalization's custom_args as top-level fields
    events = [{"event": "delivered", "email": p["to"][0]["email"], "sg_message_id": "msg-1.filter0001", **p["custom_args"]}
              for p in body["personalizations"]]
    receipts = from_sendgrid(events, NOW).receipts
    assert [r.delivery_id for r in receipts] == [d.delivery_id for d in twice]
