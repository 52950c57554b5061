"""Provider failover through the real stack: a campaign over HTTP, the bulk route and deliver agents, Redis (the
circuits), PostgreSQL (the ledger) and two sandbox providers, SendGrid first and SMTP second.

SendGrid goes down mid-campaign (every request a 503): its circuit opens and SMTP takes the traffic, including the
deliveries that failed and came back from the retry tier. SendGrid comes back: after its circuit's open period the
traffic returns to it. Every recipient gets exactly one email, and every notification ends sent.
"""
from __future__ import annotations

import time
from collections import Counter

import pytest
from fastapi.testclient import TestClient

from producers.api import create_api
from producers.api.config import ApiConfig
from tests.integration.test_campaign import template
from tests.support.api import make_api_key
from tests.support.sandbox import sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.e2e

N = 6000


def by_provider(ctl) -> Counter:
    return Counter(m["provider"] for m in ctl.inbox("email", envelope=True))


def test_the_primary_goes_down_mid_campaign_nothing_is_lost_or_sent_twice_and_traffic_returns(sandbox, worker_factory,
                                                                                               db, tmp_path):
    settings = sandbox.settings.model_copy(update={"email_provider": "sendgrid", "email_failover_provider": "smtp",
                                                   "home": tmp_path})
    ctl = sandbox.control
    tag = settings.app_id
    db.execute("INSERT INTO users (id, email, first_name) SELECT %s || '-' || i, %s || '-' || i || '@example.org', 'N' || i "
               "FROM generate_series(1, %s) AS i", (tag, tag, N))
    template(db, f"{tag}_news", "Hi {{ user.first_name }}")
    ctl.faults("sendgrid", latency_ms=150)   # 100 emails a request: the campaign takes a few seconds
    worker_factory(settings, agents=["route-bulk", "deliver-email-bulk", "retry-1s", "retry-2s", "retry-3s", "status"],
                   extra_env={"HERALD_DELIVER__MAX_CHUNK": "100", "HERALD_DELIVER__BREAKER_OPEN_SECONDS": "1",
                              "HERALD_SMTP_CONNECTIONS": "1"}).wait_ready()
    auth = {"Authorization": f"Bearer {make_api_key(settings)}"}
    with TestClient(create_api(settings, ApiConfig(rate_limit=1000, key_cache_seconds=0))) as client:
        started = client.post("/v1/campaigns", headers=auth, json={
            "template": f"{tag}_news", "recipients": [f"{tag}-{i}" for i in range(1, N + 1)]})
        assert started.status_code == 202, started.text
        cid = started.json()["id"]
        wait_for(lambda: by_provider(ctl)["sendgrid"] >= 300, 120, interval=0.1, message="part sent through SendGrid")
        ctl.faults("sendgrid", storm=-1)   # down: every request a 503
        wait_for(lambda: by_provider(ctl)["smtp"] >= 100, 60, interval=0.1, message="traffic failed over to SMTP")
        ctl.clear_faults()
        recovered = time.time()
        assert sum(by_provider(ctl).values()) < N - 1000, "the campaign finished before the recovery: proved nothing"

        def settled() -> dict | None:
            v = client.get(f"/v1/campaigns/{cid}", headers=auth).json()
            return v if v["sent"] == N else None

        view = wait_for(settled, 180, interval=0.5, message="every recipient sent")
    time.sleep(2)   # a duplicate would show up now
    inbox = ctl.inbox("email", envelope=True)
    per_address = Counter(m["to"] for m in inbox)
    assert len(per_address) == N and set(per_address.values()) == {1}, "an address got no email, or more than one"
    assert view["failed"] == 0 and view["dead_lettered"] == 0
    providers = by_provider(ctl)
    assert providers["smtp"] >= 100 and providers["sendgrid"] >= 300
    back = [m for m in inbox if m["provider"] == "sendgrid" and m["received_at"] > recovered]
    assert back, "no email went through SendGrid after it recovered"
    late_smtp = [m for m in inbox if m["provider"] == "smtp" and m["received_at"] > recovered + 15]
    assert late_smtp == [], "SMTP still took traffic long after SendGrid recovered"
    assert db.execute("SELECT count(*) FROM deliveries WHERE status = 'sent' AND notification_id LIKE %s",
                      (f"{cid}:%",)).fetchone()[0] == N


def test_a_primary_refusing_the_account_hands_every_email_to_the_second_provider_once(sandbox, worker_factory, db,
                                                                                      tmp_path):
    settings = sandbox.settings.model_copy(update={"email_provider": "sendgrid", "email_failover_provider": "smtp",
                                                   "home": tmp_path})
    ctl = sandbox.control
    tag, n = settings.app_id, 300
    db.execute("INSERT INTO users (id, email, first_name) SELECT %s || '-' || i, %s || '-' || i || '@example.org', 'N' || i "
               "FROM generate_series(1, %s) AS i", (tag, tag, n))
    template(db, f"{tag}_news", "Hi {{ user.first_name }}")
    ctl.faults("sendgrid", error_rate=1.0, error_status=401)   # the API key revoked: every request refused
    worker_factory(settings, agents=["route-bulk", "deliver-email-bulk", "retry-1s", "retry-2s", "retry-3s", "status"],
                   extra_env={"HERALD_DELIVER__MAX_CHUNK": "50"}).wait_ready()
    auth = {"Authorization": f"Bearer {make_api_key(settings)}"}
    with TestClient(create_api(settings, ApiConfig(rate_limit=1000, key_cache_seconds=0))) as client:
        started = client.post("/v1/campaigns", headers=auth, json={
            "template": f"{tag}_news", "recipients": [f"{tag}-{i}" for i in range(1, n + 1)]})
        assert started.status_code == 202, started.text
        cid = started.json()["id"]

        def settled() -> dict | None:
            v = client.get(f"/v1/campaigns/{cid}", headers=auth).json()
            return v if v["sent"] == n else None

        view = wait_for(settled, 120, interval=0.5, message="every recipient sent")
    time.sleep(2)
    per_address = Counter(m["to"] for m in ctl.inbox("email", envelope=True))
    assert len(per_address) == n and set(per_address.values()) == {1}
    assert by_provider(ctl) == Counter({"smtp": n}), "SendGrid refused every request: nothing went through it"
    assert view["failed"] == 0 and view["dead_lettered"] == 0
    assert ctl.requests("sendgrid") >= 1, "the primary was tried first"


def test_sms_goes_through_a_second_twilio_account_when_the_first_is_refused(sandbox, worker_factory, db, tmp_path):
    second = {"account_sid": "AC" + "2" * 32, "auth_token": "sandbox-token", "sender": "+15005550007"}
    settings = sandbox.settings.model_copy(update={
        "sms_failover": sandbox.settings.sms_failover.model_copy(update=second), "home": tmp_path})
    ctl = sandbox.control
    tag, n = settings.app_id, 40
    db.execute("INSERT INTO users (id, phone, first_name) SELECT %s || '-' || i, '+43660' || lpad(i::text, 7, '0'), 'N' || i "
               "FROM generate_series(1, %s) AS i", (tag, n))
    template(db, f"{tag}_sms", "Hi {{ user.first_name }}", channel="sms")
    ctl.faults("twilio", refused_accounts=[settings.twilio_account_sid])   # the first account suspended
    worker_factory(settings, agents=["route-bulk", "deliver-sms-bulk", "retry-1s", "retry-2s", "retry-3s", "status"],
                   extra_env={"HERALD_DELIVER__MAX_CHUNK": "10"}).wait_ready()
    auth = {"Authorization": f"Bearer {make_api_key(settings)}"}
    with TestClient(create_api(settings, ApiConfig(rate_limit=1000, key_cache_seconds=0))) as client:
        started = client.post("/v1/campaigns", headers=auth, json={
            "template": f"{tag}_sms", "channels": ["sms"], "recipients": [f"{tag}-{i}" for i in range(1, n + 1)]})
        assert started.status_code == 202, started.text
        cid = started.json()["id"]

        def settled() -> dict | None:
            v = client.get(f"/v1/campaigns/{cid}", headers=auth).json()
            return v if v["sent"] == n else None

        view = wait_for(settled, 120, interval=0.5, message="every recipient sent")
    time.sleep(1)
    inbox = ctl.inbox("sms")
    assert Counter(m["to"] for m in inbox) == Counter({f"+43660{i:07d}": 1 for i in range(1, n + 1)})
    assert {m["from"] for m in inbox} == {"+15005550007"}, "every SMS left from the second account's number"
    assert view["failed"] == 0 and view["dead_lettered"] == 0
