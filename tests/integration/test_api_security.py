"""API security (issue 16) through the real API, PostgreSQL and Redis: scopes, tenants, per-key rates,
critical categories, erasure of a user, the SendGrid webhook's replay window."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from fastapi.testclient import TestClient

from infra.settings import Settings
from producers.api import create_api
from producers.api.config import ApiConfig
from tests.support.api import SendGridSigner, make_api_key

pytestmark = pytest.mark.integration

FCM = "fGx0" + "A" * 120 + ":APA91b" + "-_" * 10


@dataclass
class Api:
    client: TestClient
    settings: Settings
    db: psycopg.Connection
    signer: SendGridSigner

    def key(self, scopes: list[str] | None = None, tenant: str | None = None, rate_limit: int | None = None) -> dict[str, str]:
        """Headers carrying a new key with these scopes (default: send, read, admin), tenant and rate."""
        return {"Authorization": f"Bearer {make_api_key(self.settings, 'sec', scopes, tenant, rate_limit)}"}


@pytest.fixture
def api(settings: Settings, db: psycopg.Connection) -> Iterator[Api]:
    signer = SendGridSigner()
    settings = settings.model_copy(update={"sendgrid_webhook_public_key": signer.public_b64})
    db.execute("INSERT INTO templates (code, channel, version, body_text, active) VALUES ('welcome', 'email', 1, 'Hi', true)"
               " ON CONFLICT DO NOTHING")
    config = ApiConfig(rate_limit=1000, key_cache_seconds=0)
    with TestClient(create_api(settings, config)) as client:
        yield Api(client, settings, db, signer)


def uid(tag: str = "u") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def notification(user_id: str, **extra) -> dict:
    return {"user_id": user_id, "template": "welcome", "channels": ["email"], **extra}


# --- scopes ---------------------------------------------------------------------------------------------------

def test_a_key_without_the_scope_gets_403_naming_it(api: Api):
    user = uid()
    admin, reader, sender = api.key(["admin"]), api.key(["read"]), api.key(["send"])
    assert api.client.put(f"/v1/users/{user}", json={"email": "a@example.com"}, headers=admin).status_code == 200

    refused = [
        api.client.post("/v1/notifications", json=notification(user), headers=reader),
        api.client.get(f"/v1/users/{user}", headers=sender),
        api.client.get(f"/v1/users/{user}/preferences", headers=sender),
        api.client.get(f"/v1/users/{user}/notifications", headers=sender),
        api.client.get(f"/v1/notifications/{uuid.uuid4().hex}", headers=sender),
        api.client.put(f"/v1/users/{user}", json={"first_name": "X"}, headers=reader),
        api.client.put(f"/v1/users/{user}/preferences", json={"muted": True}, headers=sender),
        api.client.post(f"/v1/users/{user}/devices", json={"platform": "android", "token": FCM}, headers=reader),
    ]
    for r, scope in zip(refused, ["send", "read", "read", "read", "read", "admin", "admin", "admin"], strict=True):
        assert r.status_code == 403, (r.request.method, r.request.url, r.text)
        body = r.json()
        assert body["code"] == "forbidden" and f"lacks the '{scope}' scope" in body["detail"], body
    # the refused writes changed nothing
    assert api.client.get(f"/v1/users/{user}", headers=reader).json()["first_name"] is None
    # and the scopes that fit are let through
    assert api.client.post("/v1/notifications", json=notification(user), headers=sender).status_code == 202
    assert api.client.get(f"/v1/users/{user}", headers=reader).status_code == 200


def test_keys_made_before_scopes_keep_send_read_and_admin(api: Api):
    user = uid()
    legacy = api.key()  # the column default, what the migration gives existing keys
    assert api.client.put(f"/v1/users/{user}", json={"email": "l@example.com"}, headers=legacy).status_code == 200
    assert api.client.get(f"/v1/users/{user}", headers=legacy).status_code == 200
    assert api.client.post("/v1/notifications", json=notification(user), headers=legacy).status_code == 202


# --- tenants --------------------------------------------------------------------------------------------------

def test_a_tenant_key_reads_and_writes_only_its_tenants_users(api: Api):
    ta, tb = uid("tenant"), uid("tenant")
    key_a, key_b, key_all = api.key(tenant=ta), api.key(tenant=tb), api.key()
    mine, theirs = uid("a"), uid("b")
    r = api.client.put(f"/v1/users/{mine}", json={"email": "mine@example.com"}, headers=key_a)
    assert r.status_code == 200 and r.json()["tenant"] == ta
    assert api.client.put(f"/v1/users/{theirs}", json={"email": "theirs@example.com"}, headers=key_b).json()["tenant"] == tb
    api.db.execute("INSERT INTO notifications (id, event_id, event_type, user_id, status) VALUES (%s, %s, 'x', %s, 'queued')",
                   (f"n-{theirs}", f"n-{theirs}", theirs))

    # tenant A cannot see tenant B's user in any way: 404, as for an unknown user
    for path in (f"/v1/users/{theirs}", f"/v1/users/{theirs}/preferences", f"/v1/users/{theirs}/notifications",
                 f"/v1/notifications/n-{theirs}"):
        r = api.client.get(path, headers=key_a)
        assert r.status_code == 404 and r.json()["code"] == "not_found", (path, r.text)
    # nor change it
    assert api.client.put(f"/v1/users/{theirs}", json={"email": "stolen@example.com"}, headers=key_a).status_code == 404
    assert api.client.put(f"/v1/users/{theirs}/preferences", json={"muted": True}, headers=key_a).status_code == 404
    api.client.post(f"/v1/users/{theirs}/devices", json={"platform": "android", "token": FCM + "b"}, headers=key_b)
    assert api.client.post(f"/v1/users/{theirs}/devices", json={"platform": "android", "token": FCM + "a"},
                           headers=key_a).status_code == 404
    assert api.client.delete(f"/v1/users/{theirs}/devices/{FCM}b", headers=key_a).status_code == 404
    assert api.db.execute("SELECT count(*) FROM devices WHERE user_id = %s", (theirs,)).fetchone()[0] == 1
    # nor send to it, by id or by giving inline addresses for the same id
    r = api.client.post("/v1/notifications", json=notification(theirs), headers=key_a)
    assert r.status_code == 422 and r.json()["code"] == "unknown_user"
    r = api.client.post("/v1/notifications", json=notification(theirs, recipient={"email": "x@example.com"}), headers=key_a)
    assert r.status_code == 404
    assert api.db.execute("SELECT email, tenant FROM users WHERE id = %s", (theirs,)).fetchone() == ("theirs@example.com", tb)
    assert api.db.execute("SELECT count(*) FROM preferences WHERE user_id = %s", (theirs,)).fetchone()[0] == 0

    # its own tenant's user it reaches; B reaches its own; a key without a tenant reaches both
    assert api.client.get(f"/v1/users/{mine}", headers=key_a).status_code == 200
    assert api.client.post("/v1/notifications", json=notification(mine), headers=key_a).status_code == 202
    assert api.client.get(f"/v1/notifications/n-{theirs}", headers=key_b).status_code == 200
    for user in (mine, theirs):
        assert api.client.get(f"/v1/users/{user}", headers=key_all).status_code == 200
    assert api.client.get(f"/v1/notifications/n-{theirs}", headers=key_all).status_code == 200
    # a key without a tenant changes a user and leaves its tenant as it was
    assert api.client.put(f"/v1/users/{theirs}", json={"first_name": "B"}, headers=key_all).json()["tenant"] == tb


def test_a_tenant_key_cannot_take_another_tenants_push_token(api: Api):
    ta, tb = uid("tenant"), uid("tenant")
    key_a, key_b = api.key(tenant=ta), api.key(tenant=tb)
    a, b, token = uid("a"), uid("b"), FCM + uuid.uuid4().hex
    api.client.put(f"/v1/users/{a}", json={}, headers=key_a)
    api.client.put(f"/v1/users/{b}", json={}, headers=key_b)
    assert api.client.post(f"/v1/users/{b}/devices", json={"platform": "android", "token": token}, headers=key_b).status_code == 201
    r = api.client.post(f"/v1/users/{a}/devices", json={"platform": "android", "token": token}, headers=key_a)
    assert r.status_code == 409 and "outside this key's tenant" in r.json()["detail"]
    assert api.db.execute("SELECT user_id FROM devices WHERE token = %s", (token,)).fetchone() == (b,)


# --- per-key rates --------------------------------------------------------------------------------------------

def test_each_key_can_carry_its_own_request_rate(api: Api):
    slow, default = api.key(rate_limit=2), api.key()
    user = uid()
    api.client.put(f"/v1/users/{user}", json={}, headers=default)
    got = [api.client.get(f"/v1/users/{user}", headers=slow) for _ in range(3)]
    assert [r.status_code for r in got] == [200, 200, 429]
    assert got[0].headers["X-RateLimit-Limit"] == "2"
    assert "rate limit of 2 requests" in got[2].json()["detail"]
    others = [api.client.get(f"/v1/users/{user}", headers=default) for _ in range(3)]
    assert [r.status_code for r in others] == [200, 200, 200]
    assert others[0].headers["X-RateLimit-Limit"] == "1000"


# --- critical categories --------------------------------------------------------------------------------------

def test_only_a_key_with_the_critical_scope_picks_a_critical_category(api: Api, tmp_path):
    user = uid()
    sender, critical = api.key(["send", "admin"]), api.key(["send", "critical"])
    api.client.put(f"/v1/users/{user}", json={"email": "c@example.com"}, headers=sender)
    r = api.client.post("/v1/notifications", json=notification(user, category="security"), headers=sender)
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "forbidden" and "category 'security' is critical" in r.json()["detail"]
    assert "'critical' scope" in r.json()["detail"]
    assert api.client.post("/v1/notifications", json=notification(user, category="marketing"), headers=sender).status_code == 202
    assert api.client.post("/v1/notifications", json=notification(user, category="security"), headers=critical).status_code == 202


def test_the_critical_categories_come_from_the_routes_file(api: Api, tmp_path):
    from streams.routes import default_routes_path

    routes = tmp_path / "routes.yaml"
    routes.write_text(default_routes_path().read_text().replace("critical_categories: [security]",
                                                                "critical_categories: [security, billing]"))
    settings = api.settings.model_copy(update={"routes_file": routes})
    user = uid()
    api.db.execute("INSERT INTO users (id, email) VALUES (%s, 'b@example.com')", (user,))
    with TestClient(create_api(settings, ApiConfig(key_cache_seconds=0))) as client:
        r = client.post("/v1/notifications", json=notification(user, category="billing"), headers=api.key(["send"]))
    assert r.status_code == 403 and "category 'billing' is critical" in r.json()["detail"]


# --- erasure --------------------------------------------------------------------------------------------------

def test_delete_user_erases_personal_data_and_keeps_anonymous_counts(api: Api):
    import redis

    from streams.stores.recipients import invalidation_key, recipient_key

    tenant = uid("tenant")
    admin, reader, other = api.key(["admin", "read"], tenant=tenant), api.key(["read"], tenant=tenant), api.key(tenant=uid("t"))
    # a phone of this test alone: the session's database is shared, and the API fuzz test stores +436641234567
    phone = f"+43664{uuid.uuid4().int % 10**7:07d}"
    user, email, token = uid("erase"), f"{uuid.uuid4().hex[:8]}@example.com", FCM + uuid.uuid4().hex
    assert api.client.put(f"/v1/users/{user}", json={"email": email, "phone": phone, "first_name": "Erika"},
                          headers=admin).status_code == 200
    assert api.client.post(f"/v1/users/{user}/devices", json={"platform": "android", "token": token}, headers=admin).status_code == 201
    assert api.client.put(f"/v1/users/{user}/preferences", json={"categories": {"marketing": False}}, headers=admin).status_code == 200
    # what the pipeline wrote for two notifications: statuses with reasons quoting the address, the ledger, a send_at row
    sent, later = f"n-{uuid.uuid4().hex}", f"n-{uuid.uuid4().hex}"
    db = api.db
    db.execute("INSERT INTO notifications (id, event_id, event_type, user_id, category, status, reason) VALUES "
               "(%s, %s, 'OrderPlaced', %s, 'transactional', 'bounced', %s), (%s, %s, 'OrderPlaced', %s, 'marketing', 'scheduled', NULL)",
               (sent, sent, user, f"550 {email} unknown", later, later, user))
    db.execute("INSERT INTO status_history (notification_id, channel, status, reason, delivery_id) VALUES "
               "(%s, 'email', 'sent', NULL, %s), (%s, 'email', 'bounced', %s, %s), (%s, 'sms', 'sent', NULL, %s)",
               (sent, f"{sent}:email", sent, f"550 {email} unknown", f"{sent}:email", sent, f"{sent}:sms"))
    db.execute("INSERT INTO deliveries (delivery_id, notification_id, channel, address, status, error) VALUES "
               "(%s, %s, 'email', %s, 'sent', %s), (%s, %s, 'sms', %s, 'sent', NULL), (%s, %s, 'push', %s, 'failed', 'bad token')",
               (f"{sent}:email", sent, email, f"retry: {email} greylisted", f"{sent}:sms", sent, phone, f"{sent}:push", sent, token))
    db.execute("INSERT INTO scheduled (due_at, topic, key, value, kind, notification_id) "
               "VALUES (now() + interval '1 day', 't', %s, %s, 'send_at', %s)", (user.encode(), email.encode(), later))
    r = redis.Redis.from_url(api.settings.redis_dsn)
    r.set(recipient_key(api.settings, user), b"cached recipient", ex=300)

    # the wrong scope and another tenant change nothing
    assert api.client.delete(f"/v1/users/{user}", headers=reader).status_code == 403
    assert api.client.delete(f"/v1/users/{user}", headers=other).status_code == 404
    assert db.execute("SELECT email FROM users WHERE id = %s", (user,)).fetchone() == (email,)

    got = api.client.delete(f"/v1/users/{user}", headers=admin)
    assert got.status_code == 200, got.text
    assert got.json() == {"user_id": user, "profile_deleted": True, "notifications_anonymised": 2, "deliveries_anonymised": 3,
                          "devices_deleted": 1, "scheduled_deleted": 1}

    # no personal data left: profile, devices, preferences gone; no address, phone or token in any row
    for table in ("users", "devices", "preferences"):
        assert db.execute(f"SELECT count(*) FROM {table} WHERE {'id' if table == 'users' else 'user_id'} = %s",
                          (user,)).fetchone()[0] == 0, table
    for value in (email, phone, token, user):
        for table in ("users", "devices", "notifications", "status_history", "deliveries", "scheduled"):
            hits = db.execute(f"SELECT count(*) FROM {table} t WHERE strpos(t::text, %s) > 0", (value,)).fetchone()[0]
            assert hits == 0, f"{value!r} still in {table}"
        assert db.execute("SELECT count(*) FROM scheduled WHERE strpos(encode(value, 'escape'), %s) > 0", (value,)).fetchone()[0] == 0
    # the anonymous counts stay: both notifications, their statuses and categories, the history and the ledger rows
    rows = db.execute("SELECT id, user_id, status, category FROM notifications WHERE id = ANY(%s) ORDER BY status",
                      ([sent, later],)).fetchall()
    assert [(n, s, c) for n, _, s, c in rows] == [(sent, "bounced", "transactional"), (later, "scheduled", "marketing")]
    assert rows[0][1] == rows[1][1] and rows[0][1].startswith("erased#")
    assert db.execute("SELECT status FROM status_history WHERE notification_id = %s ORDER BY id", (sent,)).fetchall() == [
        ("sent",), ("bounced",), ("sent",)]
    assert db.execute("SELECT channel, address, status FROM delivery_state WHERE notification_id = %s ORDER BY channel",
                      (sent,)).fetchall() == [("email", "erased", "sent"), ("push", "erased", "failed"), ("sms", "erased", "sent")]
    # the cached recipient is dropped, with the guard that keeps a worker's in-flight read from filling it again
    assert r.get(recipient_key(api.settings, user)) is None
    assert r.exists(invalidation_key(api.settings, user))

    # through the API the user is gone, and a second erasure has nothing to erase
    admin_all = api.key(["admin", "read"])
    assert api.client.get(f"/v1/users/{user}", headers=admin_all).status_code == 404
    assert api.client.get(f"/v1/users/{user}/notifications", headers=admin_all).json()["items"] == []
    assert api.client.get(f"/v1/notifications/{sent}", headers=admin_all).json()["status"] == "bounced"
    assert api.client.delete(f"/v1/users/{user}", headers=admin).status_code == 404


# --- SendGrid webhook replay window ----------------------------------------------------------------------------

SENDGRID_EVENT = b'[{"email":"r@example.com","timestamp":1700000000,"event":"delivered","sg_message_id":"R1.filter1"}]'


def test_a_replayed_sendgrid_webhook_older_than_the_window_is_refused(api: Api):
    import time

    now = int(time.time())
    captured = api.signer.headers(SENDGRID_EVENT, timestamp=str(now - 601))  # correctly signed, 10 minutes ago
    r = api.client.post("/v1/webhooks/sendgrid", content=SENDGRID_EVENT, headers=captured)
    assert r.status_code == 401, r.text
    assert "refused as a replay" in r.json()["detail"] and "HERALD_API__SENDGRID_WEBHOOK_MAX_AGE (600s)" in r.json()["detail"]
    ahead = api.signer.headers(SENDGRID_EVENT, timestamp=str(now + 3600))
    assert "in the future" in api.client.post("/v1/webhooks/sendgrid", content=SENDGRID_EVENT, headers=ahead).json()["detail"]
    fresh = api.signer.headers(SENDGRID_EVENT, timestamp=str(now - 30))
    assert api.client.post("/v1/webhooks/sendgrid", content=SENDGRID_EVENT, headers=fresh).json() == {"accepted": 1, "skipped": 0, "unsubscribed": 0}


def test_the_sendgrid_webhook_window_is_a_setting(api: Api):
    import time

    with TestClient(create_api(api.settings, ApiConfig(sendgrid_webhook_max_age=60))) as client:
        minute_ago = api.signer.headers(SENDGRID_EVENT, timestamp=str(int(time.time()) - 120))
        r = client.post("/v1/webhooks/sendgrid", content=SENDGRID_EVENT, headers=minute_ago)
    assert r.status_code == 401 and "(60s)" in r.json()["detail"]
