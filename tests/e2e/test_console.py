"""The console at /console, driven by headless Chromium (Playwright) against the real stack: sign-in and its
refusals, the message log and a timeline, a dead letter replayed and delivered once, a campaign's progress moving and
its cancel, templates previewed and activated."""
from __future__ import annotations

import re
import time
import uuid

import httpx
import pytest
from pydantic import SecretStr

from infra.kafka.producer import Producer
from infra.kafka.records import TRACE, OutRecord
from infra.settings import ConsoleConfig, Settings
from infra.tools.console.session import COOKIE, Session, sign
from infra.tools.seed import seed_templates
from schemas.codec import Codec
from tests.integration.test_campaign import template
from tests.support.api import make_api_key
from tests.support.console import ConsoleServer, browser, shot  # noqa: F401 - fixture
from tests.support.sandbox import sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.e2e

SECRET = "console-test-secret"


def with_console(settings: Settings, **over: object) -> Settings:
    return settings.model_copy(update={"console": ConsoleConfig(secret=SecretStr(SECRET), refresh_seconds=1), **over})


def sign_in(page, url: str, key: str) -> None:
    page.goto(f"{url}/console/")
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_selector("#sign-out")


def test_sign_in_refuses_a_bad_key_an_expired_session_and_a_forged_form_and_templates_activate_by_admin_only(
        settings, db, browser, tmp_path):
    s = with_console(settings)
    template(db, "console_hello", "Hello {{ user.first_name }}, v1")
    db.execute("INSERT INTO templates (code, channel, locale, version, subject, body_text, body_html, active) VALUES "
               "('console_hello', 'email', 'default', 2, 'Hi {{ user.first_name }}', 'Hello {{ user.first_name }}, v2', "
               "'<p>Hello <b>{{ user.first_name }}</b>, v2</p>', false)")
    admin = make_api_key(s, "console-admin", scopes=["read", "admin"])
    reader = make_api_key(s, "console-reader", scopes=["read"])
    sender = make_api_key(s, "console-sender", scopes=["send"])
    with ConsoleServer(s) as srv:
        ctx = browser.new_context()
        page = ctx.new_page()
        # a bad key, and a key without read or admin, are refused
        page.goto(f"{srv.url}/console/")
        assert page.locator("#key").is_visible()
        shot(page, "01-sign-in")
        page.fill("#key", "hk_deadbeef_notakey")
        page.click("button[type=submit]")
        assert "unknown or revoked API key" in page.inner_text("[role=alert]")
        page.fill("#key", sender)
        page.click("button[type=submit]")
        assert "neither the read nor the admin scope" in page.inner_text("[role=alert]")
        page.fill("#key", make_api_key(s, "console-tenant", scopes=["read"], tenant="acme"))
        page.click("button[type=submit]")
        assert "bound to a tenant" in page.inner_text("[role=alert]")
        assert all(c["name"] != COOKIE for c in ctx.cookies())

        # a read key signs in; the cookie is HttpOnly, SameSite=Strict and expires
        sign_in(page, srv.url, reader)
        cookie = next(c for c in ctx.cookies() if c["name"] == COOKIE)
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > time.time()
        assert hk_of(reader) not in cookie["value"]
        # read may look, not change: the activate button is absent, and a hand-made POST is refused
        page.goto(f"{srv.url}/console/templates/console_hello")
        assert page.locator("button.activate").count() == 0
        csrf = page.locator("input[name=csrf]").first.get_attribute("value")
        r = page.request.post(f"{srv.url}/console/templates/console_hello/activate",
                              form={"csrf": csrf, "channel": "email", "locale": "default", "version": "2"})
        assert r.status == 403 and "admin scope" in r.text()

        # a forged form (no token, or another session's) is refused, and nothing changes
        r = page.request.post(f"{srv.url}/console/templates/console_hello/activate",
                              form={"channel": "email", "locale": "default", "version": "2"})
        assert r.status == 403 and "CSRF" in r.text()
        assert active_version(db, "console_hello") == 1

        # an expired session, even correctly signed, is refused
        expired = sign(SECRET.encode(), Session(int(cookie_key_id(db, reader)), int(time.time()) - 5, "n0nce"))
        ctx.add_cookies([{**cookie, "value": expired}])
        page.goto(f"{srv.url}/console/messages")
        assert "session has expired" in page.inner_text("[role=alert]")
        # and so is a cookie signed with another secret
        ctx.add_cookies([{**cookie, "value": sign(b"another", Session(1, int(time.time()) + 600, "x"))}])
        page.goto(f"{srv.url}/console/")
        assert "not one this console made" in page.inner_text("[role=alert]")

        # revoking the key ends its sessions
        sign_in(page, srv.url, reader)
        db.execute("UPDATE api_keys SET revoked_at = now() WHERE id = %s", (cookie_key_id(db, reader),))
        page.goto(f"{srv.url}/console/messages")
        assert "revoked" in page.inner_text("[role=alert]")

        # admin: previews a version with sample data and activates it
        sign_in(page, srv.url, admin)
        page.goto(f"{srv.url}/console/templates")
        shot(page, "08-templates")
        page.click("text=console_hello")
        page.click("#versions tr:has-text('2') >> text=preview")
        frame = page.frame_locator("iframe.html-preview")
        assert "Hello Ada, v2" in frame.locator("body").inner_text()
        assert "Subject: Hi Ada" in page.inner_text("#preview")
        shot(page, "09-template-preview")
        page.click("#versions tr:has-text('2') >> button.activate")
        assert "v2 is active" in page.inner_text(".flash")
        assert active_version(db, "console_hello") == 2

        # sign-out ends the session: the browser drops the cookie, and a copy of it no longer opens a page
        before = next(c for c in ctx.cookies() if c["name"] == COOKIE)["value"]
        assert httpx.get(f"{srv.url}/console/", cookies={COOKIE: before}).status_code == 200
        page.click("#sign-out")
        assert "signed out" in page.inner_text("[role=alert]")
        assert all(c["name"] != COOKIE for c in ctx.cookies())
        again = httpx.get(f"{srv.url}/console/", cookies={COOKIE: before})
        assert again.status_code == 401 and "signed out" in again.text
        ctx.close()


def hk_of(key: str) -> str:
    return key.split("_", 2)[2]


def cookie_key_id(db, key: str) -> int:
    from producers.api.keys import hash_key

    return db.execute("SELECT id FROM api_keys WHERE key_hash = %s", (hash_key(key),)).fetchone()[0]


def active_version(db, code: str) -> int:
    return db.execute("SELECT version FROM templates WHERE code = %s AND active", (code,)).fetchone()[0]


def reset_requested(settings: Settings, db, address: str, trace: str) -> str:
    uid, eid = f"u-{uuid.uuid4().hex[:8]}", f"e-{uuid.uuid4().hex[:12]}"
    db.execute("INSERT INTO users (id, email, locale, time_zone, first_name) VALUES (%s,%s,'en','UTC','Ada')", (uid, address))
    ev = {"event_id": eid, "occurred_at": int(time.time() * 1000), "user_id": uid,
          "reset_url": "https://example.test/r/1", "expires_in_minutes": 30}
    Producer(settings).send_all_blocking(
        [OutRecord(settings.topic("events"), uid.encode(), Codec().encode("PasswordResetRequested", ev), [(TRACE, trace.encode())])])
    return eid


def status_of(db, eid: str) -> str | None:
    row = db.execute("SELECT status FROM notifications WHERE event_id = %s", (eid,)).fetchone()
    return row[0] if row else None


def replay_in_console(page, url: str) -> str:
    """Dry run of the deliver stage's dead letters, then the replay; returns the finished job's status line."""
    page.goto(f"{url}/console/dlq?stage=deliver")
    page.click("#dry-run")
    page.wait_for_selector("#plan")
    return page.inner_text("#plan")


def test_find_a_notification_by_trace_id_see_its_timeline_and_replay_its_dead_letter_delivered_once(
        sandbox, db, worker_factory, browser):
    seed_templates(db)
    settings = with_console(sandbox.settings, email_provider="sendgrid")
    ctl = sandbox.control
    worker_factory(settings, extra_env={"HERALD_DELIVER__BREAKER_FAILURES": "1000"}).wait_ready()
    ctl.faults("sendgrid", storm=-1)        # every attempt fails: the retry ladder ends in the DLQ
    address, trace = f"{uuid.uuid4().hex[:8]}@example.org", uuid.uuid4().hex
    eid = reset_requested(settings, db, address, trace)
    wait_for(lambda: status_of(db, eid) == "failed", 180, interval=0.5, message="status failed after the ladder")
    admin = make_api_key(settings, "console-admin", scopes=["read", "admin"])
    with ConsoleServer(settings) as srv:
        page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        sign_in(page, srv.url, admin)
        page.wait_for_selector("#lag")
        shot(page, "02-overview")

        # the message log: the trace id finds the notification; its timeline shows each attempt and retry tier
        page.click("text=Messages")
        page.fill("#q", trace)
        page.click("form.search button")
        rows = page.locator("#results tr")
        assert rows.count() == 2, page.inner_text("#results")   # the header and the one notification
        shot(page, "03-messages")
        rows.nth(1).locator("a").first.click()
        assert page.inner_text("#trace") == trace
        timeline = page.inner_text("#timeline")
        assert "queued" in timeline and "failed" in timeline and "ledger: claimed" in timeline
        assert timeline.count("retrying") == 3 and "retry tier 1" in timeline and "retry tier 3" in timeline

        # the dead letter: counted by stage and reason, shown decoded with its headers
        page.click("text=Dead letters")
        assert "deliver" in page.inner_text("#dlq-counts")
        shot(page, "04-dead-letters")
        page.locator("#dlq-records a").first.click()
        assert page.inner_text("#stage") == "deliver"
        assert "herald-dlq-error-class" in page.inner_text("#headers")
        value = page.inner_text("#value")
        assert '"schema": "Delivery' in value and address in value
        shot(page, "05-dead-letter")

        # replay after the provider recovered: a dry run first (nothing sent), then the replay with live progress
        ctl.clear_faults()
        plan = replay_in_console(page, srv.url)
        assert "deliver" in plan and page.locator("#replay-now").is_visible()
        shot(page, "06-replay-dry-run")
        time.sleep(2)
        assert status_of(db, eid) == "failed" and ctl.requests("sendgrid") == 4   # the dry run sent nothing
        page.click("#replay-now")
        page.wait_for_selector("#job[data-finished]", timeout=60_000)
        assert "replayed 1, failed 0" in page.inner_text("#job-status")
        shot(page, "07-replay-done")
        wait_for(lambda: status_of(db, eid) == "sent", 120, interval=0.5, message="status sent after the replay")
        assert len(ctl.inbox("email", to=address)) == 1

        # the same replay again passes the ledger: the provider is not called twice for it
        replay_in_console(page, srv.url)
        page.click("#replay-now")
        page.wait_for_selector("#job[data-finished]", timeout=60_000)
        time.sleep(5)
        assert len(ctl.inbox("email", to=address)) == 1 and ctl.requests("sendgrid") == 5

        page.goto(f"{srv.url}/console/messages?q={trace}")
        page.locator("#results a").first.click()
        timeline = page.inner_text("#timeline")
        assert "ledger: sent" in timeline and re.search(r"\bsent\b", timeline)
        shot(page, "03b-timeline")


def progress_of(page) -> float:
    return float(page.inner_text("#progress-text").split()[0])


def test_a_campaigns_progress_moves_on_its_own_and_cancel_from_the_console_stops_it(sandbox, db, worker_factory, browser,
                                                                                     tmp_path):
    n = 6000
    settings = with_console(sandbox.settings, email_provider="sendgrid", home=tmp_path)
    ctl = sandbox.control
    tag = settings.app_id
    db.execute("INSERT INTO users (id, email, first_name) SELECT %s || '-' || i, %s || '-' || i || '@example.org', 'N' || i "
               "FROM generate_series(1, %s) AS i", (tag, tag, n))
    template(db, f"{tag}_sale", "Hi {{ user.first_name }}, {{ discount }} off")
    # 100 emails a request and a batch, two batches in hand (HERALD_DELIVER__BULK_AHEAD): ~500 a second, a run of
    # ~12 s whose progress moves a request at a time (a batch of 400 kB, the default, would be the whole campaign in
    # two batches, its statuses written when each ends)
    ctl.faults("sendgrid", latency_ms=400)
    worker_factory(settings, agents=["route-bulk", "deliver-email-bulk", "status"],
                   extra_env={"HERALD_DELIVER__MAX_CHUNK": "100", "HERALD_BULK_BATCH_BYTES": "20000"}).wait_ready()
    key = make_api_key(settings, "console-admin")   # send, read, admin
    with ConsoleServer(settings) as srv:
        started = httpx.post(f"{srv.url}/v1/campaigns", headers={"Authorization": f"Bearer {key}"}, timeout=60, json={
            "template": f"{tag}_sale", "variables": {"discount": "20%"}, "recipients": [f"{tag}-{i}" for i in range(1, n + 1)]})
        assert started.status_code == 202, started.text
        cid = started.json()["id"]
        page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        page.on("dialog", lambda d: d.accept())
        sign_in(page, srv.url, key)
        page.click("text=Campaigns")
        row = page.locator(f"tr[data-campaign='{cid}']")
        assert row.count() == 1
        page.click(f"text={cid}")
        # the page refreshes itself: the progress moves without a reload
        first = wait_for(lambda: progress_of(page) > 0 and progress_of(page), 120, interval=0.2, message="progress above 0")
        wait_for(lambda: progress_of(page) > first, 60, interval=0.2, message="the progress to move on its own")
        assert page.locator("#curve").count() == 1
        page.wait_for_selector("#curve polyline")
        shot(page, "11-campaign")
        # cancel from the console midway: acknowledged once the workers have seen it, nothing sent after that
        assert progress_of(page) < 100, "the campaign finished before the cancel: the test proved nothing"
        page.click("#cancel")
        assert "nothing is sent after this" in page.inner_text(".flash")
        acked = time.time()

        def settled() -> bool:
            sent, canceled = db.execute(
                "SELECT count(*) FILTER (WHERE status IN ('sent', 'delivered')), count(*) FILTER (WHERE status = 'canceled') "
                "FROM notifications WHERE campaign_id = %s", (cid,)).fetchone()
            return sent + canceled == n

        wait_for(settled, 120, interval=0.5, message="every recipient sent or canceled")
        assert not [m for m in ctl.inbox("email", envelope=True) if m["received_at"] > acked]
        page.reload()
        assert int(page.inner_text("#canceled")) > 0
        assert page.locator("#cancel").count() == 0
        shot(page, "12-campaign-canceled")
        page.goto(f"{srv.url}/console/campaigns")
        shot(page, "10-campaigns")
        page.goto(f"{srv.url}/console/")
        page.wait_for_selector("#deliveries-chart polyline")
        assert "email · bulk" in page.inner_html("#deliveries-chart")
        shot(page, "02-overview")

