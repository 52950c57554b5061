"""A campaign started over HTTP, watched, and canceled midway through a real run: sent + canceled = total, and the
provider (the sandbox's SendGrid) receives nothing after the cancel was acknowledged."""
from __future__ import annotations

import time

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


def test_cancel_midway_sent_plus_canceled_is_total_and_nothing_is_sent_after_the_ack(sandbox, worker_factory, db, tmp_path):
    settings = sandbox.settings.model_copy(update={"email_provider": "sendgrid", "home": tmp_path})
    ctl = sandbox.control
    tag = settings.app_id
    db.execute("INSERT INTO users (id, email, first_name) SELECT %s || '-' || i, %s || '-' || i || '@example.org', 'N' || i "
               "FROM generate_series(1, %s) AS i", (tag, tag, N))
    template(db, f"{tag}_sale", "Hi {{ user.first_name }}, {{ discount }} off")
    ctl.faults("sendgrid", latency_ms=150)   # 100 emails a request, ~600 a second: the cancel lands midway
    worker_factory(settings, agents=["route-bulk", "deliver-email-bulk", "status"],
                   extra_env={"HERALD_DELIVER__MAX_CHUNK": "100"}).wait_ready()
    auth = {"Authorization": f"Bearer {make_api_key(settings)}"}
    with TestClient(create_api(settings, ApiConfig(rate_limit=1000, key_cache_seconds=0))) as client:
        started = client.post("/v1/campaigns", headers=auth, json={
            "template": f"{tag}_sale", "variables": {"discount": "20%"}, "recipients": [f"{tag}-{i}" for i in range(1, N + 1)]})
        assert started.status_code == 202, started.text
        cid = started.json()["id"]
        wait_for(lambda: ctl.stats()["count"] >= 600, 120, interval=0.2, message="part of the campaign sent")
        canceled = client.delete(f"/v1/campaigns/{cid}", headers=auth)
        acked = time.time()
        assert canceled.status_code == 200, canceled.text
        sent_before_ack = ctl.stats()["count"]
        assert sent_before_ack < N, "the campaign finished before the cancel: the test proved nothing"

        def settled() -> dict | None:
            v = client.get(f"/v1/campaigns/{cid}", headers=auth).json()
            return v if v["sent"] + v["canceled"] == N else None

        view = wait_for(settled, 120, interval=0.5, message="every recipient sent or canceled")
    assert view["canceled"] > 0 and view["canceled_at"] is not None and view["progress"] == 1.0
    assert view["status"] == "canceled" or view["produced"] == N
    inbox = ctl.inbox("email", envelope=True)
    late = [m for m in inbox if m["received_at"] > acked]
    assert late == [], f"{len(late)} emails reached the provider after the cancel was acknowledged"
    assert len(inbox) == view["sent"] == sent_before_ack
    assert db.execute("SELECT count(*) FROM notifications WHERE campaign_id = %s AND status = 'canceled' "
                      "AND reason = 'campaign canceled'", (cid,)).fetchone()[0] == view["canceled"]
