"""Campaign throttling and send windows through the real stack (API, Kafka, worker, PostgreSQL, scheduler, sandbox).

A recipient whose local time is outside the campaign's window ends 'deferred' (reason send_window) and is delivered
by the scheduler when the window opens in their zone, while one inside it gets the email at once; a campaign with a
rate reaches the provider no faster than its rate.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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


def _view(client: TestClient, auth: dict[str, str], cid: str) -> dict:
    return client.get(f"/v1/campaigns/{cid}", headers=auth).json()


def test_a_recipient_outside_the_window_waits_for_it_and_is_delivered_when_it_opens(sandbox, worker_factory, db,
                                                                                   tmp_path):
    settings = sandbox.settings.model_copy(update={"home": tmp_path})
    ctl, tag = sandbox.control, settings.app_id
    late, inside = f"{tag}-utc", f"{tag}-plus1"
    # the window opens 10 s from now in UTC and lasts two hours: 'late' (UTC) is outside it until then, 'inside'
    # (UTC+1, Etc/GMT-1 in POSIX's inverted sign) is already in it
    opens = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=10)
    window = f"{opens:%H:%M:%S}-{opens + timedelta(hours=2):%H:%M:%S}"
    db.execute("INSERT INTO users (id, email, time_zone) VALUES (%s, %s, 'UTC'), (%s, %s, 'Etc/GMT-1')",
               (late, f"{late}@example.org", inside, f"{inside}@example.org"))
    template(db, f"{tag}_win", "Good morning")
    worker_factory(settings, agents=["route-bulk", "deliver-email-bulk", "status"]).wait_ready()
    auth = {"Authorization": f"Bearer {make_api_key(settings)}"}
    with TestClient(create_api(settings, ApiConfig(rate_limit=1000, key_cache_seconds=0))) as client:
        started = client.post("/v1/campaigns", headers=auth, json={
            "template": f"{tag}_win", "recipients": [late, inside], "send_window": window})
        assert started.status_code == 202, started.text
        cid = started.json()["id"]
        view = wait_for(lambda: (v := _view(client, auth, cid))["sent"] == 1 and v["pending"].get("deferred") == 1 and v,
                        60, interval=0.2, message="one sent, one deferred")
        assert view["send_window"] == window and view["progress"] == 0.5
        assert db.execute("SELECT status, reason FROM notifications WHERE id = %s", (f"{cid}:{late}",)).fetchone() == (
            "deferred", "send_window")
        assert [m["to"] for m in ctl.inbox("email", envelope=True)] == [f"{inside}@example.org"]
        due = db.execute("SELECT due_at, kind FROM scheduled WHERE notification_id = %s", (f"{cid}:{late}",)).fetchone()
        assert due == (opens, "send_window")

        env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
        with open(tmp_path / "scheduler.log", "ab") as log:
            sched = subprocess.Popen([sys.executable, "-m", "infra.tools.cli.main", "scheduler", "--interval", "0.2",
                                      "--metrics-port", "0", "--housekeeping-every", "0"],
                                     env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                [mail] = wait_for(lambda: ctl.inbox("email", to=f"{late}@example.org", envelope=True), 60, interval=0.2,
                                  message="the deferred email once the window opened")
                done = wait_for(lambda: (v := _view(client, auth, cid))["sent"] == 2 and v, 30, interval=0.2,
                                message="both sent")
            finally:
                os.killpg(sched.pid, signal.SIGTERM)
                sched.wait(30)
    assert mail["received_at"] >= opens.timestamp(), "delivered before the window opened"
    assert done["progress"] == 1.0 and done["pending"] == {}


def test_a_campaign_with_a_rate_reaches_the_provider_no_faster_than_it(sandbox, worker_factory, db, tmp_path):
    settings = sandbox.settings.model_copy(update={"home": tmp_path})
    ctl, tag = sandbox.control, settings.app_id
    n, rate = 24, 120   # 2 a second: records of 4 recipients, every 2 s; about 10 s in all
    users = [f"{tag}-r{i}" for i in range(n)]
    db.execute("INSERT INTO users (id, email) SELECT u, u || '@example.org' FROM unnest(%s::text[]) AS u", (users,))
    template(db, f"{tag}_rate", "Hello")
    worker_factory(settings, agents=["route-bulk", "deliver-email-bulk", "status"]).wait_ready()
    auth = {"Authorization": f"Bearer {make_api_key(settings)}"}
    with TestClient(create_api(settings, ApiConfig(rate_limit=1000, key_cache_seconds=0))) as client:
        posted = time.time()
        started = client.post("/v1/campaigns", headers=auth, json={
            "template": f"{tag}_rate", "recipients": users, "rate_per_minute": rate})
        assert started.status_code == 202, started.text
        assert started.json()["estimate_seconds"] >= n * 60 / rate
        cid = started.json()["id"]
        view = wait_for(lambda: (v := _view(client, auth, cid))["sent"] == n and v, 90, interval=0.3, message="all sent")
    assert view["rate_per_minute"] == rate
    times = sorted(m["received_at"] for m in ctl.inbox("email", envelope=True))
    assert len(times) == n
    # the k-th email is in the (k // 4)-th record, produced no earlier than (k // 4) * 2 s after the campaign started:
    # paced, not one burst (the pipeline's own latency can only delay an email further)
    for k, at in enumerate(times):
        assert at - posted >= (k // 4) * 4 / (rate / 60), f"email {k} arrived {at - posted:.1f}s after the start"
    assert times[-1] - posted >= (n - 4) / (rate / 60)
    assert times[-1] - posted < 3 * n / (rate / 60), "far slower than the rate"
