"""The console shows the API's own views: a campaign's counts and progress, and a notification with its history, are
what GET /v1/campaigns/{id} and GET /v1/notifications/{id} answer (one query, one model, one ``summarize``)."""
from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from infra.settings import Settings
from infra.tools.console.app import create_app
from tests.support.api import make_api_key

pytestmark = pytest.mark.integration

# (status, reason, notifications): 20 recipients, 15 produced, 13 with a status
OUTCOMES = [("sent", None, 3), ("delivered", None, 2), ("bounced", "hard", 1), ("suppressed", "preference", 2),
            ("rate_limited", "email:day", 1), ("failed", "Permanent", 1), ("dead_lettered", "render", 1),
            ("canceled", None, 1), ("queued", None, 1)]


@pytest.fixture
def signed_in(topics: Settings) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The API with the console, and a client signed in to the console as the browser is (the form's CSRF token)."""
    key = make_api_key(topics, "console-views", scopes=["read", "admin"])
    with TestClient(create_app(topics)) as client:
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/console/login").text)
        assert csrf
        signed = client.post("/console/login", data={"csrf": csrf[1], "key": key, "next": ""}, follow_redirects=False)
        assert signed.status_code == 303, signed.text[:500]
        yield client, {"Authorization": f"Bearer {key}"}


def add_campaign(db, cid: str) -> None:
    db.execute("INSERT INTO campaigns (id, template, source, total, produced, status) VALUES (%s, 'sale', 'test', 20, 15, "
               "'produced')", (cid,))
    i = 0
    for status, reason, n in OUTCOMES:
        for _ in range(n):
            i += 1
            db.execute("INSERT INTO notifications (id, event_id, event_type, user_id, template, category, campaign_id, status, "
                       "reason) VALUES (%s, %s, 'CampaignMessage', %s, 'sale', 'marketing', %s, %s, %s)",
                       (f"{cid}-{i}", f"{cid}:{i}", f"{cid}-u{i}", cid, status, reason))


def cell_numbers(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<td class="n[^"]*"[^>]*>(\d+)</td>', html)]


def test_a_campaigns_numbers_in_the_console_are_the_apis(signed_in, db, settings):
    client, auth = signed_in
    cid = f"{settings.app_id}-views"
    add_campaign(db, cid)

    v = client.get(f"/v1/campaigns/{cid}", headers=auth).json()
    assert (v["sent"], v["delivered"], v["bounced"], v["in_flight"], v["finished"], v["progress"]) == (6, 2, 1, 2, 12, 0.6)
    assert v["suppressed"] == {"suppressed: preference": 2} and v["pending"] == {"queued": 1}

    page = client.get(f"/console/campaigns/{cid}")
    assert page.status_code == 200, page.text[:500]
    assert '<span id="progress-text">60.0 %</span>' in page.text
    assert "(12 of 20 at an end; produced 15, in flight 2)" in page.text
    outcomes = page.text[page.text.index('<table id="outcomes">'):]
    outcomes = outcomes[:outcomes.index("</table>")]
    # sent, delivered, bounced, suppressed: preference, rate limited, failed, dead-lettered, canceled, pending: queued, in flight
    assert cell_numbers(outcomes) == [6, 2, 1, 2, 1, 1, 1, 1, 1, 2]
    assert "suppressed: suppressed: preference" in outcomes and "pending: queued" in outcomes
    # the refreshed fragment is the same view
    assert "(12 of 20 at an end; produced 15, in flight 2)" in client.get(f"/console/campaigns/{cid}/part").text

    listing = client.get("/console/campaigns").text
    row = re.search(rf'<tr data-campaign="{re.escape(cid)}">.*?</tr>', listing, re.S)
    assert row, listing[:1000]
    assert '<span class="progress-text">60.0 %</span>' in row[0]
    # recipients, sent, suppressed, failed (with rate-limited), dead-lettered, canceled, in flight
    assert cell_numbers(row[0]) == [20, 6, 2, 2, 1, 1, 2]
    assert client.get("/console/campaigns/nope").status_code == 404


def test_a_notification_in_the_console_is_the_apis_view_with_the_ledger_beside_its_history(signed_in, db, settings):
    client, auth = signed_in
    nid, trace, user = f"{settings.app_id}-n1", f"{settings.app_id}trace", f"{settings.app_id}-u"
    t0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    db.execute("INSERT INTO notifications (id, event_id, event_type, user_id, template, category, status, reason, trace_id, "
               "created_at, updated_at) VALUES (%s, %s, 'PasswordResetRequested', %s, 'password_reset', 'security', 'sent', "
               "NULL, %s, %s, %s)", (nid, f"e-{nid}", user, trace, t0, t0 + timedelta(seconds=3)))
    for s, (status, reason, pmid) in enumerate([("queued", None, None), ("retrying", "retry tier 1: timeout", None),
                                                 ("sent", None, "pm-1")]):
        db.execute("INSERT INTO status_history (notification_id, channel, status, reason, delivery_id, provider_message_id, at) "
                   "VALUES (%s, 'email', %s, %s, 'd1', %s, %s)", (nid, status, reason, pmid, t0 + timedelta(seconds=s)))
    db.execute("INSERT INTO deliveries (delivery_id, notification_id, channel, address, status, attempts, provider_message_id, "
               "claimed_at, sent_at) VALUES (%s, %s, 'email', 'a@example.org', 'sent', 2, 'pm-1', %s, %s)",
               (f"d-{nid}", nid, t0 + timedelta(milliseconds=500), t0 + timedelta(milliseconds=2500)))

    v = client.get(f"/v1/notifications/{nid}", headers=auth).json()
    assert (v["status"], v["trace_id"], v["user_id"]) == ("sent", trace, user)
    assert [h["status"] for h in v["history"]] == ["queued", "retrying", "sent"]

    page = client.get(f"/console/messages/{nid}")
    assert page.status_code == 200, page.text[:500]
    assert f'<code id="trace">{trace}</code>' in page.text and '<span class="pill sent" id="status">sent</span>' in page.text
    timeline = page.text[page.text.index('<table id="timeline">'):]
    # the API's history and the ledger's claim and send, in time order
    assert re.findall(r"<td>(queued|retrying|sent|ledger: claimed|ledger: sent)</td>", timeline) == [
        "queued", "ledger: claimed", "retrying", "sent", "ledger: sent"]
    assert "retry tier 1: timeout" in timeline

    found = client.get("/console/messages", params={"q": trace}).text
    assert f'href="/console/messages/{nid}"' in found and "1 notification(s)" in found
    assert client.get("/console/messages/nope").status_code == 404


def test_a_campaign_send_recorded_by_its_history_row_shows_as_sent_and_is_found_by_its_message_id(signed_in, db, settings):
    # the bulk lane leaves its ledger row 'claimed' and records the send by the delivery's sent-once history row
    client, _ = signed_in
    nid, did, pmid = f"{settings.app_id}-b1", f"{settings.app_id}-d-b1", f"{settings.app_id}-SGBULK"
    t0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    db.execute("INSERT INTO notifications (id, event_id, event_type, user_id, template, category, status, created_at, "
               "updated_at) VALUES (%s, %s, 'CampaignMessage', 'u-b1', 'weekly_digest', 'marketing', 'sent', %s, %s)",
               (nid, f"e-{nid}", t0, t0 + timedelta(seconds=2)))
    db.execute("INSERT INTO deliveries (delivery_id, notification_id, channel, address, status, attempts, claimed_at) "
               "VALUES (%s, %s, 'email', 'b@example.org', 'claimed', 1, %s)", (did, nid, t0 + timedelta(seconds=1)))
    db.execute("INSERT INTO status_history (notification_id, channel, status, delivery_id, provider_message_id, at) "
               "VALUES (%s, 'email', 'sent', %s, %s, %s)", (nid, did, pmid, t0 + timedelta(seconds=2)))
    assert db.execute("SELECT status, provider_message_id, sent_at FROM delivery_state WHERE delivery_id = %s",
                      (did,)).fetchone() == ("sent", pmid, t0 + timedelta(seconds=2))

    timeline = client.get(f"/console/messages/{nid}").text
    timeline = timeline[timeline.index('<table id="timeline">'):]
    assert re.findall(r"<td>(sent|ledger: claimed|ledger: sent|ledger: failed)</td>", timeline) == [
        "ledger: claimed", "sent", "ledger: sent"]
    found = client.get("/console/messages", params={"q": pmid}).text
    assert f'href="/console/messages/{nid}"' in found and "1 notification(s)" in found
