"""The HTTP API against the real PostgreSQL, Redis and Kafka (FastAPI's TestClient runs the app's lifespan)."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr
from twilio.request_validator import RequestValidator

from infra.settings import Settings
from infra.topics import events_topic
from producers.api import create_api
from producers.api.config import ApiConfig
from schemas.codec import Codec
from streams.stores.recipients import recipient_key
from tests.support.api import SendGridSigner, make_api_key, read_topic

pytestmark = pytest.mark.integration

FCM = "fGx0" + "A" * 120 + ":APA91b" + "-_" * 10


@dataclass
class Api:
    client: TestClient
    settings: Settings
    key: str
    signer: SendGridSigner

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@pytest.fixture
def api(topics: Settings, db) -> Iterator[Api]:
    signer = SendGridSigner()
    settings = topics.model_copy(update={"sendgrid_webhook_public_key": signer.public_b64})
    db.execute("INSERT INTO templates (code, channel, version, body_text, active) VALUES ('welcome', 'email', 1, 'Hi', true),"
               " ('welcome', 'push', 1, 'Hi', true) ON CONFLICT DO NOTHING")
    db.execute("INSERT INTO users (id, email) VALUES ('u1', 'u1@example.com'), ('user-7', 'u7@example.com') ON CONFLICT DO NOTHING")
    config = ApiConfig(rate_limit=1000, max_body_bytes=4096, max_webhook_body_bytes=8192, key_cache_seconds=0)
    with TestClient(create_api(settings, config)) as client:
        yield Api(client, settings, make_api_key(settings), signer)


def notify(api: Api, headers: dict[str, str] | None = None, **body):
    payload = {"user_id": "u1", "template": "welcome", "channels": ["email"], "variables": {"name": "Ana"}, **body}
    return api.client.post("/v1/notifications", json=payload, headers={**api.auth, **(headers or {})})


def test_post_notification_is_produced_to_events_keyed_by_user(api: Api):
    r = notify(api, user_id="user-7", variables={"name": "Ana", "items": [1, 2]}, send_at="2030-01-01T09:00:00+01:00")
    assert r.status_code == 202, r.text
    nid = r.json()["id"]
    [msg] = read_topic(api.settings, api.settings.topic("events"), 1)
    decoded = Codec().decode(msg.value())
    assert decoded.name == "NotificationRequested"
    assert msg.key() == b"user-7"
    assert decoded.record["event_id"] == nid
    assert decoded.record["channels"] == ["email"]
    assert decoded.record["variables_json"] == '{"name":"Ana","items":[1,2]}'
    assert int(decoded.record["send_at"].timestamp()) == 1893484800
    assert dict(msg.headers())["herald-trace-id"] == r.headers["X-Trace-Id"].encode()


def test_a_critical_category_is_produced_to_the_critical_events_topic(api: Api):
    """A password reset through the API skips the events topic's queue: an agent of its own routes events.critical."""
    critical = {"Authorization": f"Bearer {make_api_key(api.settings, 'crit', scopes=['send', 'critical'])}"}
    reset, other = notify(api, headers=critical, category="security"), notify(api, headers=critical, category="marketing")
    assert reset.status_code == other.status_code == 202, (reset.text, other.text)
    [on_critical] = read_topic(api.settings, events_topic(api.settings, critical=True), 1)
    [on_events] = read_topic(api.settings, events_topic(api.settings), 1)
    assert Codec().decode(on_critical.value()).record["event_id"] == reset.json()["id"]
    assert Codec().decode(on_events.value()).record["event_id"] == other.json()["id"]


W3C_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(("headers", "trace"), [
    ({"traceparent": f"00-{W3C_TRACE}-00f067aa0ba902b7-01"}, W3C_TRACE),
    ({"traceparent": f"00-{W3C_TRACE}-00f067aa0ba902b7-01", "X-Trace-Id": "order-42"}, "order-42"),
    ({"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"}, None),   # invalid: ignored, Herald makes its own
])
def test_an_upstream_traceparent_becomes_the_trace_id_unless_x_trace_id_is_given(api: Api, headers, trace):
    r = notify(api, headers=headers)
    assert r.status_code == 202, r.text
    said = r.json()["trace_id"]
    assert r.headers["X-Trace-Id"] == said
    if trace is None:
        assert len(said) == 32 and said != "0" * 32
    else:
        assert said == trace
    [msg] = read_topic(api.settings, api.settings.topic("events"), 1)
    assert dict(msg.headers())["herald-trace-id"] == said.encode()


def test_idempotency_key_same_body_same_id_other_body_409(api: Api):
    h = {"Idempotency-Key": f"k-{uuid.uuid4().hex}"}
    first = notify(api, headers=h)
    again = notify(api, headers=h)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other = notify(api, headers=h, variables={"name": "Bo"})
    assert other.status_code == 409 and "different request body" in other.json()["detail"]
    assert notify(api, headers={"Idempotency-Key": f"k-{uuid.uuid4().hex}"}).json()["id"] != first.json()["id"]
    # keys are per API key: another caller's same Idempotency-Key is a different request
    other_key = make_api_key(api.settings, "other")
    r = api.client.post("/v1/notifications", json={"user_id": "u1", "template": "welcome", "channels": ["email"], "variables": {"name": "Bo"}},
                        headers={"Authorization": f"Bearer {other_key}", **h})
    assert r.status_code == 202 and r.json()["id"] != first.json()["id"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"template": "nope"}, "unknown template 'nope'"),
        ({"channels": ["sms"]}, "no active sms version"),
        ({"channels": ["fax"]}, "unknown channel (known: email, sms, push)"),
        ({"user_id": ""}, "user_id"),
        ({"variables": "x"}, "variables"),
    ],
)
def test_bad_requests_are_422_naming_the_problem(api: Api, body, needle):
    r = notify(api, **body)
    assert r.status_code == 422
    assert needle in r.text


def test_no_key_wrong_key_revoked_key_are_401(api: Api, db):
    assert api.client.post("/v1/notifications", json={}).status_code == 401
    assert api.client.get("/v1/users/u1", headers={"Authorization": "Bearer hk_00000000_wrong"}).status_code == 401
    key = make_api_key(api.settings, "to-revoke")
    assert api.client.get("/v1/users/nobody", headers={"X-API-Key": key}).status_code == 404
    db.execute("UPDATE api_keys SET revoked_at = now() WHERE name = 'to-revoke'")
    r = api.client.get("/v1/users/nobody", headers={"X-API-Key": key})
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"


def test_rate_limit_per_key_answers_429_with_retry_after(topics: Settings):
    config = ApiConfig(rate_limit=3, rate_window=30)
    with TestClient(create_api(topics, config)) as client:
        a, b = make_api_key(topics, "a"), make_api_key(topics, "b")
        codes = [client.get("/v1/users/x", headers={"X-API-Key": a}).status_code for _ in range(4)]
        assert codes == [404, 404, 404, 429]
        r = client.get("/v1/users/x", headers={"X-API-Key": a})
        assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 30
        assert client.get("/v1/users/x", headers={"X-API-Key": b}).status_code == 404  # another key has its own budget


def test_oversized_body_is_413(api: Api):
    r = notify(api, variables={"blob": "x" * 5000})
    assert r.status_code == 413 and "4096" in r.json()["detail"]

    def chunks():  # no Content-Length: counted while it streams
        for _ in range(10):
            yield b"x" * 1000

    r = api.client.post("/v1/notifications", content=chunks(), headers={**api.auth, "Content-Type": "application/json"})
    assert r.status_code == 413


def test_users_devices_and_preferences_invalidate_the_recipient_cache(api: Api, db):
    r_ = redis.Redis.from_url(api.settings.redis_dsn)
    key = recipient_key(api.settings, "ana")

    def cached() -> None:
        r_.set(key, b"stale")

    assert api.client.get("/v1/users/ana/preferences", headers=api.auth).status_code == 404
    cached()
    r = api.client.put("/v1/users/ana", json={"email": "ana@example.com", "locale": "de-AT", "time_zone": "Europe/Vienna"}, headers=api.auth)
    assert r.status_code == 200 and r.json()["locale"] == "de-AT"
    assert not r_.exists(key)
    # an address that bounced is deliverable again once the user changes it
    db.execute("UPDATE users SET email_undeliverable = true WHERE id = 'ana'")
    assert api.client.put("/v1/users/ana", json={"first_name": "Ana"}, headers=api.auth).json()["email_undeliverable"] is True
    assert api.client.put("/v1/users/ana", json={"email": "ana@new.example"}, headers=api.auth).json()["email_undeliverable"] is False
    bad = api.client.put("/v1/users/ana", json={"time_zone": "Mars/Base"}, headers=api.auth)
    assert bad.status_code == 422 and "time_zone: the value is not an IANA time zone" in bad.text
    assert "Mars/Base" not in bad.text  # errors name the field, never echo the input

    assert api.client.get("/v1/users/ana/preferences", headers=api.auth).json() == {
        "muted": False, "channels": {}, "categories": {}, "quiet_start": None, "quiet_end": None}
    cached()
    prefs = {"muted": False, "channels": {"sms": False}, "categories": {"marketing": False}, "quiet_start": "22:00:00", "quiet_end": "07:00:00"}
    assert api.client.put("/v1/users/ana/preferences", json=prefs, headers=api.auth).status_code == 200
    assert not r_.exists(key)
    assert api.client.get("/v1/users/ana/preferences", headers=api.auth).json() == prefs
    row = db.execute("SELECT channels, categories FROM preferences WHERE user_id = 'ana'").fetchone()
    assert row == ({"sms": False}, {"marketing": False})
    assert "unknown channel" in api.client.put("/v1/users/ana/preferences", json={"channels": {"fax": True}}, headers=api.auth).text
    assert api.client.put("/v1/users/ghost/preferences", json={}, headers=api.auth).status_code == 404

    cached()
    assert api.client.post("/v1/users/ana/devices", json={"platform": "android", "token": FCM}, headers=api.auth).status_code == 201
    assert not r_.exists(key)
    assert db.execute("SELECT user_id, active FROM devices WHERE token = %s", (FCM,)).fetchone() == ("ana", True)
    bad = api.client.post("/v1/users/ana/devices", json={"platform": "ios", "token": "1234"}, headers=api.auth)
    assert bad.status_code == 422 and "APNs" in bad.text
    apns_as_fcm = api.client.post("/v1/users/ana/devices", json={"platform": "android", "token": "ab" * 32}, headers=api.auth)
    assert apns_as_fcm.status_code == 422 and "looks like an APNs device token" in apns_as_fcm.text
    ios = api.client.post("/v1/users/ana/devices", json={"platform": "ios", "token": "ab" * 32}, headers=api.auth)
    assert ios.status_code == 201 and ios.json()["platform"] == "ios"
    assert db.execute("SELECT platform FROM devices WHERE token = %s", ("ab" * 32,)).fetchone() == ("ios",)
    assert api.client.post("/v1/users/ghost/devices", json={"platform": "android", "token": FCM}, headers=api.auth).status_code == 404
    cached()
    assert api.client.delete(f"/v1/users/ana/devices/{FCM}", headers=api.auth).status_code == 204
    assert not r_.exists(key)
    assert api.client.delete(f"/v1/users/ana/devices/{FCM}", headers=api.auth).status_code == 404


def test_notification_status_history_and_paged_user_history(api: Api, db):
    for i in range(5):
        db.execute("INSERT INTO notifications (id, event_id, event_type, user_id, status, status_rank, created_at)"
                   " VALUES (%s, %s, 'OrderPlaced', 'pager', 'sent', 50, now() - %s * interval '1 minute')", (f"p{i}", f"p{i}", i))
    db.execute("INSERT INTO status_history (notification_id, channel, status, at) VALUES"
               " ('p0', 'email', 'queued', now() - interval '2 s'), ('p0', 'email', 'sent', now() - interval '1 s')")
    r = api.client.get("/v1/notifications/p0", headers=api.auth)
    assert r.status_code == 200
    assert r.json()["status"] == "sent" and [h["status"] for h in r.json()["history"]] == ["queued", "sent"]
    assert api.client.get("/v1/notifications/nope", headers=api.auth).status_code == 404

    seen, cursor = [], None
    for _ in range(5):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.client.get("/v1/users/pager/notifications", params=params, headers=api.auth).json()
        seen += [n["id"] for n in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["p0", "p1", "p2", "p3", "p4"]
    assert api.client.get("/v1/users/pager/notifications", params={"cursor": "garbage"}, headers=api.auth).status_code == 422


def test_sendgrid_webhook_verifies_the_signature_and_produces_receipts(api: Api):
    payload = b'[{"email":"a@example.com","timestamp":1700000000,"event":"bounce","type":"bounce","sg_message_id":"M1.filter1","reason":"550"},' \
              b'{"event":"processed","sg_message_id":"M1.filter1"}]'
    headers = api.signer.headers(payload)
    ok = api.client.post("/v1/webhooks/sendgrid", content=payload, headers=headers)
    assert ok.status_code == 200 and ok.json() == {"accepted": 1, "skipped": 1, "unsubscribed": 0}
    [msg] = read_topic(api.settings, api.settings.topic("receipts"), 1)
    rec = Codec().decode(msg.value()).record
    assert msg.key() == b"M1" and (rec["status"], rec["hard_bounce"], rec["address"]) == ("bounced", True, "a@example.com")

    tampered = payload.replace(b"bounce", b"delivered", 1)
    assert api.client.post("/v1/webhooks/sendgrid", content=tampered, headers=headers).status_code == 401
    stale = {**headers, "X-Twilio-Email-Event-Webhook-Timestamp": "1"}
    garbled = {**headers, "X-Twilio-Email-Event-Webhook-Signature": "%%%"}
    assert api.client.post("/v1/webhooks/sendgrid", content=payload, headers=stale).status_code == 401
    assert api.client.post("/v1/webhooks/sendgrid", content=payload, headers=garbled).status_code == 401
    assert api.client.post("/v1/webhooks/sendgrid", content=payload).status_code == 401
    signed_garbage = b'{"not": "an array"}'
    assert api.client.post("/v1/webhooks/sendgrid", content=signed_garbage, headers=api.signer.headers(signed_garbage)).status_code == 400
    big = b"[" + b" " * 9000 + b"]"
    assert api.client.post("/v1/webhooks/sendgrid", content=big, headers=api.signer.headers(big)).status_code == 413


def test_twilio_webhook_verifies_x_twilio_signature(api: Api):
    url = "http://testserver/v1/webhooks/twilio"
    form = {"MessageSid": "SM42", "MessageStatus": "undelivered", "ErrorCode": "30005", "To": "+436601234567", "AccountSid": "AC1"}
    sig = RequestValidator(api.settings.twilio_auth_token.get_secret_value()).compute_signature(url, form)
    ok = api.client.post("/v1/webhooks/twilio", data=form, headers={"X-Twilio-Signature": sig})
    assert ok.status_code == 200 and ok.json()["accepted"] == 1
    [msg] = read_topic(api.settings, api.settings.topic("receipts"), 1)
    rec = Codec().decode(msg.value()).record
    assert (rec["provider"], rec["provider_message_id"], rec["status"], rec["hard_bounce"]) == ("twilio", "SM42", "bounced", True)
    assert api.client.post("/v1/webhooks/twilio", data={**form, "MessageStatus": "delivered"}, headers={"X-Twilio-Signature": sig}).status_code == 401
    assert api.client.post("/v1/webhooks/twilio", data=form).status_code == 401


def test_the_second_twilio_accounts_callbacks_are_checked_with_its_own_token(topics, db):
    second = topics.sms_failover.model_copy(update={"account_sid": "AC2", "auth_token": SecretStr("second-token")})
    settings = topics.model_copy(update={"sms_failover": second})
    url = "http://testserver/v1/webhooks/twilio"
    form = {"MessageSid": "SM43", "MessageStatus": "delivered", "To": "+436601234567", "AccountSid": "AC2"}
    with TestClient(create_api(settings, ApiConfig(key_cache_seconds=0))) as client:
        for token, status in (("second-token", 200), (settings.twilio_auth_token.get_secret_value(), 401)):
            sig = RequestValidator(token).compute_signature(url, form)
            assert client.post("/v1/webhooks/twilio", data=form, headers={"X-Twilio-Signature": sig}).status_code == status
        first = {**form, "AccountSid": "AC1"}   # the first account's callbacks keep the first token
        sig = RequestValidator(settings.twilio_auth_token.get_secret_value()).compute_signature(url, first)
        assert client.post("/v1/webhooks/twilio", data=first, headers={"X-Twilio-Signature": sig}).status_code == 200


def test_readyz_and_metrics(api: Api):
    r = api.client.get("/readyz")
    assert r.status_code == 200 and r.json()["ok"] and r.json()["postgresql"] == "ok" and r.json()["redis"] == "ok"
    notify(api)
    text = api.client.get("/metrics").text
    assert "herald_api_notifications_accepted_total 1.0" in text
    assert 'herald_api_requests_total{method="POST",route="/v1/notifications",status="202"}' in text


def test_readyz_fails_when_redis_does_not_answer(topics: Settings):
    dead = topics.model_copy(update={"redis_url": SecretStr("redis://127.0.0.1:6399/0")})  # nothing listens there
    with TestClient(create_api(dead)) as client:
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["redis"].startswith("error") and r.json()["postgresql"] == "ok"
        # a request that needs Redis answers 503 with a reason, not 500
        key = make_api_key(topics)
        r = client.get("/v1/users/x", headers={"X-API-Key": key})
        assert r.status_code == 503 and "unavailable" in r.json()["detail"]


def test_with_spans_configured_the_accepted_notification_is_a_span_of_its_trace(api: Api):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from infra.tracing import tracer_for

    exporter = InMemorySpanExporter()
    api.client.app.state.resources.tracer = tracer_for(api.settings, exporter)  # type: ignore[attr-defined]
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    r = notify(api, headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
    assert r.status_code == 202, r.text
    [span] = exporter.get_finished_spans()
    assert span.name == "api: notification accepted" and span.context.trace_id == int(trace, 16)
    assert span.attributes["notification_id"] == r.json()["id"]
