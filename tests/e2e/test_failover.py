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

from schemas.vocabulary import Channel
from tests.support.campaign import bulk_campaign  # noqa: F401 - fixture
from tests.support.sandbox import sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.e2e

N = 6000
SENDGRID_THEN_SMTP = {"email_provider": "sendgrid", "email_failover_provider": "smtp"}
RETRY_TIERS = ["retry-1s", "retry-2s", "retry-3s"]   # what failed on the primary comes back through them


def by_provider(ctl) -> Counter:
    return Counter(m["provider"] for m in ctl.inbox("email", envelope=True))


def test_the_primary_goes_down_mid_campaign_nothing_is_lost_or_sent_twice_and_traffic_returns(sandbox, bulk_campaign, db):
    ctl = sandbox.control
    ctl.faults("sendgrid", latency_ms=150)   # 100 emails a request: the campaign takes a few seconds
    campaign = bulk_campaign(N, settings=SENDGRID_THEN_SMTP, agents=RETRY_TIERS, worker_env={
        "HERALD_DELIVER__MAX_CHUNK": "100", "HERALD_DELIVER__BREAKER_OPEN_SECONDS": "1", "HERALD_SMTP_CONNECTIONS": "1"})
    wait_for(lambda: by_provider(ctl)["sendgrid"] >= 300, 120, interval=0.1, message="part sent through SendGrid")
    ctl.faults("sendgrid", storm=-1)   # down: every request a 503
    wait_for(lambda: by_provider(ctl)["smtp"] >= 100, 60, interval=0.1, message="traffic failed over to SMTP")
    ctl.clear_faults()
    recovered = time.time()
    assert sum(by_provider(ctl).values()) < N - 1000, "the campaign finished before the recovery: proved nothing"
    view = campaign.wait_sent(180)
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
    assert db.execute("SELECT count(*) FROM delivery_state WHERE status = 'sent' AND notification_id LIKE %s",
                      (f"{campaign.id}:%",)).fetchone()[0] == N


def test_a_primary_refusing_the_account_hands_every_email_to_the_second_provider_once(sandbox, bulk_campaign):
    ctl = sandbox.control
    n = 300
    ctl.faults("sendgrid", error_rate=1.0, error_status=401)   # the API key revoked: every request refused
    view = bulk_campaign(n, settings=SENDGRID_THEN_SMTP, agents=RETRY_TIERS,
                         worker_env={"HERALD_DELIVER__MAX_CHUNK": "50"}).wait_sent(120)
    time.sleep(2)
    per_address = Counter(m["to"] for m in ctl.inbox("email", envelope=True))
    assert len(per_address) == n and set(per_address.values()) == {1}
    assert by_provider(ctl) == Counter({"smtp": n}), "SendGrid refused every request: nothing went through it"
    assert view["failed"] == 0 and view["dead_lettered"] == 0
    assert ctl.requests("sendgrid") >= 1, "the primary was tried first"


def test_sms_goes_through_a_second_twilio_account_when_the_first_is_refused(sandbox, bulk_campaign):
    second = {"account_sid": "AC" + "2" * 32, "auth_token": "sandbox-token", "sender": "+15005550007"}
    failover = sandbox.settings.sms_failover.model_copy(update=second)
    ctl = sandbox.control
    n = 40
    ctl.faults("twilio", refused_accounts=[sandbox.settings.twilio_account_sid])   # the first account suspended
    view = bulk_campaign(n, channel=Channel.SMS, settings={"sms_failover": failover}, agents=RETRY_TIERS,
                         worker_env={"HERALD_DELIVER__MAX_CHUNK": "10"}).wait_sent(120)
    time.sleep(1)
    inbox = ctl.inbox("sms")
    assert Counter(m["to"] for m in inbox) == Counter({f"+43660{i:07d}": 1 for i in range(1, n + 1)})
    assert {m["from"] for m in inbox} == {"+15005550007"}, "every SMS left from the second account's number"
    assert view["failed"] == 0 and view["dead_lettered"] == 0
