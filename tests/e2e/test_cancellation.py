"""Cancellation through the real stack: the HTTP API, Kafka, the worker (route, deliver, retry tiers, status), the
scheduler process, PostgreSQL and the sandbox providers.

A key cancels a notification scheduled for later (send_at) and one deferred by quiet hours; DELETE cancels one
notification; a sent one answers 409; a delivery waiting in a retry tier is not delivered after the cancel was
acknowledged; the canceled outbox rows are never published, even once due; an event with the same key that comes
after the cancel is delivered.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from producers.api import create_api
from producers.api.config import ApiConfig
from tests.integration.test_campaign import template
from tests.support.api import make_api_key
from tests.support.env import settings_env
from tests.support.sandbox import sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.e2e


def status_of(db, nid: str) -> str | None:
    row = db.execute("SELECT status FROM notifications WHERE id = %s", (nid,)).fetchone()
    return row[0] if row else None


def test_a_key_and_a_delete_cancel_what_waits_and_nothing_canceled_is_ever_sent(sandbox, worker_factory, db, tmp_path):
    settings = sandbox.settings.model_copy(update={"email_provider": "sendgrid", "home": tmp_path})
    ctl = sandbox.control
    tag = settings.app_id
    code = f"{tag}_note"
    template(db, code, "Note {{ note }}")
    template(db, code, "Note {{ note }}", channel="sms")
    a, b = f"{tag}-a", f"{tag}-b"
    now = datetime.now(UTC)
    db.execute("INSERT INTO users (id, email, first_name, time_zone) VALUES (%s, %s, 'A', 'UTC')", (a, f"{a}@example.org"))
    db.execute("INSERT INTO users (id, phone, first_name, time_zone) VALUES (%s, '+4366012345678', 'B', 'UTC')", (b,))
    db.execute("INSERT INTO preferences (user_id, quiet_start, quiet_end) VALUES (%s, %s, %s)",
               (b, (now - timedelta(hours=1)).time(), (now + timedelta(hours=1)).time()))
    worker_factory(settings, extra_env={"HERALD_DELIVER__BREAKER_FAILURES": "1000"}).wait_ready()
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "scheduler.log", "ab")  # noqa: SIM115 - the child's log, closed in the finally
    sched = subprocess.Popen([sys.executable, "-m", "infra.tools.cli.main", "scheduler", "--interval", "0.2",
                              "--metrics-port", "0", "--housekeeping-every", "0"],
                             env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    auth = {"Authorization": f"Bearer {make_api_key(settings)}"}
    key, other = f"cart-{uuid.uuid4().hex[:8]}", f"cart-{uuid.uuid4().hex[:8]}"
    later = (now + timedelta(hours=1)).isoformat()
    try:
        with TestClient(create_api(settings, ApiConfig(rate_limit=1000, key_cache_seconds=0))) as client:
            def send(user: str, note: str, channels: list[str] | None = None, **extra: object) -> str:
                r = client.post("/v1/notifications", headers=auth, json={
                    "user_id": user, "template": code, "channels": channels or ["email"], "variables": {"note": note},
                    **extra})
                assert r.status_code == 202, r.text
                return str(r.json()["id"])

            scheduled = send(a, "scheduled", send_at=later, cancellation_key=key)
            deferred = send(b, "deferred", ["sms"], cancellation_key=key)
            single = send(a, "single", send_at=later)
            sent = send(a, "sent", cancellation_key=other)
            for nid, status in ((scheduled, "scheduled"), (deferred, "deferred"), (single, "scheduled"), (sent, "sent")):
                wait_for(lambda nid=nid, status=status: status_of(db, nid) == status, 90, interval=0.2,
                         message=f"{nid} {status}")

            by_key = client.post("/v1/cancellations", headers=auth, json={"key": key})
            assert by_key.status_code == 200, by_key.text
            assert by_key.json()["scheduled_canceled"] == 2
            one = client.delete(f"/v1/notifications/{single}", headers=auth)
            assert one.status_code == 200 and one.json()["status"] == "canceled", one.text
            again = client.delete(f"/v1/notifications/{single}", headers=auth)
            assert again.status_code == 200, again.text   # canceling twice answers the same
            refused = client.delete(f"/v1/notifications/{sent}", headers=auth)
            assert refused.status_code == 409 and refused.json()["code"] == "already_sent", refused.text
            assert "already sent" in refused.json()["detail"]
            assert client.delete("/v1/notifications/no-such-id", headers=auth).status_code == 404
            assert client.post("/v1/cancellations", headers=auth, json={"key": ""}).status_code == 422

            view = client.get(f"/v1/notifications/{deferred}", headers=auth).json()
            assert view["status"] == "canceled" and view["reason"] == "cancellation key canceled"
            assert view["history"][-1]["channel"] == "sms"
            assert status_of(db, scheduled) == "canceled" and status_of(db, single) == "canceled"

            # the canceled rows fall due now: the scheduler (ticking every 0.2 s) must never publish them
            waiting = [scheduled, deferred, single]
            db.execute("UPDATE scheduled SET due_at = now() WHERE notification_id = ANY(%s)", (waiting,))

            # a delivery waiting in a retry tier: the provider is down, the cancel is acknowledged, the provider
            # comes back, and the delivery is still never sent
            ctl.faults("sendgrid", storm=-1)
            stuck_key = f"cart-{uuid.uuid4().hex[:8]}"
            stuck = send(a, "stuck", cancellation_key=stuck_key)
            wait_for(lambda: status_of(db, stuck) == "retrying", 60, interval=0.1, message="in a retry tier")
            assert client.post("/v1/cancellations", headers=auth, json={"key": stuck_key}).status_code == 200
            ctl.clear_faults()
            wait_for(lambda: status_of(db, stuck) == "canceled", 60, interval=0.2, message="canceled from the tier")

            # an event with the first key that comes after its cancel goes on
            fresh = send(a, "fresh", cancellation_key=key)
            wait_for(lambda: status_of(db, fresh) == "sent", 60, interval=0.2, message="a later event with the key")
            time.sleep(2)   # a late send (or a published canceled row) would show now
    finally:
        os.killpg(sched.pid, signal.SIGTERM)
        sched.wait(30)
        log.close()
    notes = sorted(m["text"].strip() for m in ctl.inbox("email", to=f"{a}@example.org"))
    assert notes == ["Note fresh", "Note sent"]
    assert ctl.inbox("sms") == []
    assert db.execute("SELECT count(*) FROM scheduled WHERE notification_id = ANY(%s) AND published_at IS NULL "
                      "AND canceled_at IS NOT NULL", (waiting,)).fetchone()[0] == 3
    assert db.execute("SELECT count(*) FROM delivery_state d WHERE d.notification_id = %s AND d.status = 'sent'",
                      (stuck,)).fetchone()[0] == 0
