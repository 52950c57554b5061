"""One-click unsubscribe through the real API, PostgreSQL and Redis: the signed link and SendGrid's opt-out events
turn one category off for one user (other preferences kept, cached recipient dropped); bad links are clear 4xx."""
from __future__ import annotations

import json
import time

import redis

from infra.unsubscribe import ONE_CLICK, Unsubscribe, make_token
from streams.stores.recipients import recipient_key
from tests.integration.test_api_http import Api, api  # noqa: F401 - fixture

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _path(url: str) -> str:
    return url.split("://", 1)[1].split("/", 1)[1].join(("/", ""))


def test_the_link_turns_the_category_off_keeps_the_rest_and_drops_the_cached_recipient(api: Api, db):
    db.execute("INSERT INTO preferences (user_id, channels, categories) VALUES ('u1', '{\"sms\": false}', '{\"social\": true}')"
               " ON CONFLICT (user_id) DO UPDATE SET channels = EXCLUDED.channels, categories = EXCLUDED.categories")
    r_ = redis.Redis.from_url(api.settings.redis_dsn)
    r_.set(recipient_key(api.settings, "u1"), b"stale")
    headers = Unsubscribe.from_settings(api.settings).headers("u1", "marketing")
    assert headers is not None and headers["List-Unsubscribe-Post"] == ONE_CLICK
    link = headers["List-Unsubscribe"].split(">")[0].lstrip("<")
    assert link.startswith(f"http://{api.settings.api_host}:{api.settings.api_port}/v1/unsubscribe/")

    page = api.client.get(_path(link))   # a browser (or a link scanner): a page with a button, nothing changed
    assert page.status_code == 200 and 'name="List-Unsubscribe" value="One-Click"' in page.text
    assert db.execute("SELECT categories FROM preferences WHERE user_id = 'u1'").fetchone()[0] == {"social": True}

    done = api.client.post(_path(link), content=ONE_CLICK, headers=FORM)   # no API key: the token is the credential
    assert done.status_code == 200, done.text
    assert done.json() == {"user_id": "u1", "category": "marketing", "unsubscribed": True}
    assert db.execute("SELECT channels, categories FROM preferences WHERE user_id = 'u1'").fetchone() == (
        {"sms": False}, {"social": True, "marketing": False})
    assert not r_.exists(recipient_key(api.settings, "u1"))
    assert api.client.post(_path(link), content=ONE_CLICK, headers=FORM).status_code == 200   # twice: the same
    assert api.client.get("/v1/users/u1/preferences", headers=api.auth).json()["categories"] == {
        "social": True, "marketing": False}


def test_expired_forged_or_malformed_links_and_a_body_without_one_click_are_refused(api: Api, db):
    db.execute("INSERT INTO users (id, email) VALUES ('unsub-x', 'x@example.com') ON CONFLICT DO NOTHING")
    secret = api.settings.unsubscribe.secret.get_secret_value().encode()
    expired = make_token(secret, "unsub-x", "marketing", int(time.time()) - 1)
    forged = make_token(b"someone else's key", "unsub-x", "marketing", int(time.time()) + 3600)
    good = make_token(secret, "unsub-x", "marketing", int(time.time()) + 3600)
    r = api.client.post(f"/v1/unsubscribe/{expired}", content=ONE_CLICK, headers=FORM)
    assert r.status_code == 410 and r.json()["code"] == "expired_link" and "expired" in r.json()["detail"]
    r = api.client.post(f"/v1/unsubscribe/{forged}", content=ONE_CLICK, headers=FORM)
    assert r.status_code == 403 and "not one Herald signed" in r.json()["detail"]
    altered = good.replace(good[5], "A" if good[5] != "A" else "B", 1)
    assert api.client.post(f"/v1/unsubscribe/{altered}", content=ONE_CLICK, headers=FORM).status_code in (400, 403)
    assert api.client.post("/v1/unsubscribe/not-a-token", content=ONE_CLICK, headers=FORM).status_code == 422
    r = api.client.post(f"/v1/unsubscribe/{good}", content="", headers=FORM)
    assert r.status_code == 400 and "List-Unsubscribe=One-Click" in r.json()["detail"]
    page = api.client.get(f"/v1/unsubscribe/{expired}")
    assert page.status_code == 410 and page.json()["code"] == "expired_link"
    gone = make_token(secret, "nobody-here", "marketing", int(time.time()) + 3600)
    assert api.client.post(f"/v1/unsubscribe/{gone}", content=ONE_CLICK, headers=FORM).status_code == 404
    row = db.execute("SELECT categories FROM preferences WHERE user_id = 'unsub-x'").fetchone()
    assert row is None or "marketing" not in row[0]


def test_sendgrid_unsubscribe_group_unsubscribe_and_spamreport_turn_the_category_off(api: Api, db):
    db.execute("INSERT INTO users (id, email) VALUES ('sg-a', 'a@example.com'), ('sg-b', 'b@example.com'), "
               "('sg-c', 'c@example.com'), ('sg-d', 'd@example.com') ON CONFLICT DO NOTHING")
    db.execute("INSERT INTO notifications (id, event_id, event_type, user_id, category, status) VALUES "
               "('n-a', 'n-a', 'CampaignMessage', 'sg-a', 'marketing', 'sent'), "
               "('n-b', 'n-b', 'UserFollowed', 'sg-b', 'social', 'sent'), "
               "('n-c', 'n-c', 'CampaignMessage', 'sg-c', 'newsletter', 'sent'), "
               "('n-d', 'n-d', 'PasswordResetRequested', 'sg-d', 'security', 'sent')")
    db.execute("INSERT INTO deliveries (delivery_id, notification_id, channel, address, status) "
               "VALUES ('d-c', 'n-c', 'email', 'c@example.com', 'sent')")
    r_ = redis.Redis.from_url(api.settings.redis_dsn)
    for u in ("sg-a", "sg-b", "sg-c"):
        r_.set(recipient_key(api.settings, u), b"stale")
    events = [
        {"event": "unsubscribe", "email": "a@example.com", "sg_message_id": "X1.f", "herald_notification_id": "n-a"},
        {"event": "spamreport", "email": "b@example.com", "sg_message_id": "X2.f", "herald_notification_id": "n-b"},
        {"event": "group_unsubscribe", "email": "c@example.com", "sg_message_id": "X3.f", "asm_group_id": 7,
         "herald_delivery_id": "d-c"},   # only the delivery id: found through the ledger
        {"event": "spamreport", "email": "d@example.com", "sg_message_id": "X4.f", "herald_notification_id": "n-d"},
        {"event": "unsubscribe", "email": "e@example.com", "sg_message_id": "X5.f"},   # not Herald's: skipped
    ]
    payload = json.dumps(events).encode()
    r = api.client.post("/v1/webhooks/sendgrid", content=payload, headers=api.signer.headers(payload))
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 0, "skipped": 1, "unsubscribed": 3}
    prefs = dict(db.execute("SELECT user_id, categories FROM preferences WHERE user_id LIKE 'sg-%'").fetchall())
    # a critical category (security) bypasses preferences: a spam report does not write it
    assert prefs == {"sg-a": {"marketing": False}, "sg-b": {"social": False}, "sg-c": {"newsletter": False}}
    assert not any(r_.exists(recipient_key(api.settings, u)) for u in ("sg-a", "sg-b", "sg-c"))


def test_a_sendgrid_opt_out_that_outruns_its_status_row_is_answered_503_and_applied_when_sent_again(api: Api, db):
    """The ledger holds the delivery (the email went out), the status row is not written yet: the opt-out is not
    dropped with a 200, SendGrid is told to send the batch again, and the rest of the batch is applied meanwhile."""
    db.execute("INSERT INTO users (id, email) VALUES ('late-a', 'la@example.com'), ('late-b', 'lb@example.com') "
               "ON CONFLICT DO NOTHING")
    db.execute("INSERT INTO notifications (id, event_id, event_type, user_id, category, status) VALUES "
               "('n-late-a', 'n-late-a', 'CampaignMessage', 'late-a', 'marketing', 'sent')")
    db.execute("INSERT INTO deliveries (delivery_id, notification_id, channel, address, status) "
               "VALUES ('d-late-b', 'n-late-b', 'email', 'lb@example.com', 'claimed')")
    events = [
        {"event": "unsubscribe", "email": "la@example.com", "sg_message_id": "L1.f", "herald_notification_id": "n-late-a"},
        {"event": "spamreport", "email": "lb@example.com", "sg_message_id": "L2.f", "herald_notification_id": "n-late-b",
         "herald_delivery_id": "d-late-b"},
    ]
    payload = json.dumps(events).encode()
    r = api.client.post("/v1/webhooks/sendgrid", content=payload, headers=api.signer.headers(payload))
    assert r.status_code == 503 and r.headers["Retry-After"] == "30", r.text
    assert "1 opt-out(s)" in r.json()["detail"] and "d-late-b" in r.json()["detail"]

    def prefs() -> dict:
        return dict(db.execute("SELECT user_id, categories FROM preferences WHERE user_id LIKE 'late-%'").fetchall())
    assert prefs() == {"late-a": {"marketing": False}}

    db.execute("INSERT INTO notifications (id, event_id, event_type, user_id, category, status) VALUES "
               "('n-late-b', 'n-late-b', 'CampaignMessage', 'late-b', 'marketing', 'sent')")
    r = api.client.post("/v1/webhooks/sendgrid", content=payload, headers=api.signer.headers(payload))
    assert r.status_code == 200, r.text
    assert prefs() == {"late-a": {"marketing": False}, "late-b": {"marketing": False}}
