"""The cancel routes and CLI against the real API and PostgreSQL (no worker): scopes, tenants, what answers 404 and
409, what a cancel does to the scheduler's waiting rows, and the SDK's cancellation_key. The whole pipeline is
tests/e2e/test_cancellation.py."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from fastapi.testclient import TestClient

from infra.settings import Settings
from producers.api import create_api
from producers.api.config import ApiConfig
from producers.sdk import Emitter
from schemas.codec import Codec
from tests.support.api import make_api_key
from tests.support.env import settings_env

pytestmark = pytest.mark.integration


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_api(settings, ApiConfig(rate_limit=1000, key_cache_seconds=0))) as c:
        yield c


def auth(settings: Settings, scopes: list[str] | None = None, tenant: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_api_key(settings, 'cx', scopes, tenant)}"}


def notification(db: psycopg.Connection, status: str, user: str = "u-x", tenant: str | None = None) -> str:
    nid = f"n-{uuid.uuid4().hex[:10]}"
    db.execute("INSERT INTO users (id, email, tenant) VALUES (%s, %s, %s) ON CONFLICT (id) DO NOTHING",
               (user, f"{user}@example.org", tenant))
    db.execute("INSERT INTO notifications (id, event_id, event_type, user_id, status, status_rank) "
               "VALUES (%s, %s, 'NotificationRequested', %s, %s, 20)", (nid, nid, user, status))
    return nid


def waiting_row(db: psycopg.Connection, settings: Settings, nid: str, key: str | None = None, user: str = "u-x") -> None:
    value = Codec().encode("NotificationRequested", {
        "event_id": nid, "occurred_at": datetime.now(UTC), "user_id": user, "template": "t", "channels": ["email"],
        "cancellation_key": key})
    db.execute("INSERT INTO scheduled (due_at, topic, key, value, kind, notification_id, dedup_key, cancellation_key) "
               "VALUES (%s, %s, %s, %s, 'send_at', %s, %s, %s)",
               (datetime.now(UTC) + timedelta(hours=1), settings.topic("events"), user.encode(), value, nid,
                f"send_at:{nid}", key))


def test_delete_answers_409_for_a_sent_or_ended_notification_and_cancels_a_scheduled_one(client, settings, db):
    headers = auth(settings)
    sent, failed = notification(db, "sent"), notification(db, "failed")
    r = client.delete(f"/v1/notifications/{sent}", headers=headers)
    assert r.status_code == 409 and r.json()["code"] == "already_sent" and "already sent" in r.json()["detail"]
    r = client.delete(f"/v1/notifications/{failed}", headers=headers)
    assert r.status_code == 409 and "already ended 'failed'" in r.json()["detail"]
    scheduled = notification(db, "scheduled")
    waiting_row(db, settings, scheduled)
    r = client.delete(f"/v1/notifications/{scheduled}", headers=headers)
    assert r.status_code == 200 and r.json()["scheduled_canceled"] == 1, r.text
    assert db.execute("SELECT status, reason FROM notifications WHERE id = %s", (scheduled,)).fetchone() == \
        ("canceled", "notification canceled")
    assert db.execute("SELECT canceled_at IS NOT NULL, published_at FROM scheduled WHERE notification_id = %s",
                      (scheduled,)).fetchone() == (True, None)
    assert client.delete("/v1/notifications/no-such", headers=headers).status_code == 404


def test_the_cancel_routes_need_the_send_scope_and_a_key_cancel_no_tenant(client, settings, db):
    reader = auth(settings, ["read"])
    assert client.post("/v1/cancellations", headers=reader, json={"key": "k"}).status_code == 403
    assert client.delete("/v1/notifications/x", headers=reader).status_code == 403
    tenant_key = auth(settings, ["send"], tenant="acme")
    r = client.post("/v1/cancellations", headers=tenant_key, json={"key": "k"})
    assert r.status_code == 403 and "tenant" in r.json()["detail"]
    theirs = notification(db, "scheduled", user=f"u-{uuid.uuid4().hex[:6]}", tenant="other")
    assert client.delete(f"/v1/notifications/{theirs}", headers=tenant_key).status_code == 404
    ours = notification(db, "queued", user=f"u-{uuid.uuid4().hex[:6]}", tenant="acme")
    assert client.delete(f"/v1/notifications/{ours}", headers=tenant_key).status_code == 200
    for bad in ({"key": ""}, {"key": " "}, {"key": "a\u0000b"}, {"key": "k" * 513}, {}):
        assert client.post("/v1/cancellations", headers=auth(settings), json=bad).status_code == 422, bad


def test_a_key_cancel_marks_every_waiting_row_of_the_key_and_no_other(client, settings, db):
    key = f"cart-{uuid.uuid4().hex[:8]}"
    mine = [notification(db, "scheduled") for _ in range(2)]
    other = notification(db, "scheduled")
    for nid in mine:
        waiting_row(db, settings, nid, key)
    waiting_row(db, settings, other, "another-key")
    r = client.post("/v1/cancellations", headers=auth(settings), json={"key": key})
    assert r.status_code == 200 and r.json()["scheduled_canceled"] == 2, r.text
    assert [db.execute("SELECT status FROM notifications WHERE id = %s", (n,)).fetchone()[0] for n in [*mine, other]] \
        == ["canceled", "canceled", "scheduled"]
    assert db.execute("SELECT count(*) FROM cancellations WHERE kind = 'key' AND key = %s", (key,)).fetchone()[0] == 1


def test_the_cli_cancels_by_key_and_refuses_a_sent_notification_in_one_line(settings, db):
    env = {**os.environ, **settings_env(settings)}
    run = [sys.executable, "-m", "infra.tools.cli.main", "notifications", "cancel"]
    nid = notification(db, "scheduled")
    waiting_row(db, settings, nid, "cli-key")
    done = subprocess.run([*run, "--key", "cli-key", "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and '"scheduled_canceled": 1' in done.stdout, done.stderr
    sent = notification(db, "sent")
    refused = subprocess.run([*run, "--id", sent], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "already ended 'sent'" in refused.stderr and "Traceback" not in refused.stderr
    both = subprocess.run([*run], env=env, capture_output=True, text=True, timeout=60)
    assert both.returncode == 1 and "exactly one of --key" in both.stderr


def test_the_sdk_refuses_a_cancellation_key_on_a_record_without_the_field(topics):
    herald = Emitter(topics.kafka_bootstrap, topic_prefix=topics.topic_prefix)
    with pytest.raises(ValueError, match="no cancellation_key field"):
        herald.emit("PasswordResetRequested", {"user_id": "u1", "reset_url": "https://r", "expires_in_minutes": 5},
                    cancellation_key="k")
    herald.emit("BirthdayReached", {"user_id": "u1", "age": 3}, cancellation_key="k", wait=True)


def test_an_erased_user_leaves_every_recurring_schedule(client, settings, db):
    from scheduler.recurring import create

    user = f"u-{uuid.uuid4().hex[:8]}"
    db.execute("INSERT INTO users (id, email, time_zone) VALUES (%s, %s, 'Europe/Vienna')", (user, f"{user}@example.org"))
    db.execute("INSERT INTO templates (code, channel, version, body_text, active) VALUES ('cx_weekly', 'email', 1, 'Hi', "
               "true) ON CONFLICT DO NOTHING")
    sid = f"s-{uuid.uuid4().hex[:8]}"
    create(db, sid, "0 9 * * 1", "cx_weekly", ["email"], [user])
    assert client.delete(f"/v1/users/{user}", headers=auth(settings)).status_code == 200
    assert db.execute("SELECT count(*) FROM recurring_targets WHERE user_id = %s", (user,)).fetchone()[0] == 0
