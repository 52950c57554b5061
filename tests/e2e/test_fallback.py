"""Channel fallback through the real stack: SMS first, email when the SMS was not delivered in time.

The route's ``fallback`` schedules a check in PostgreSQL; the scheduler publishes it when due; the route stage looks
at the notification's history, which the sandbox's Twilio status callbacks (through the API's webhook, the receipts
and status agents) filled in the meantime. Nothing sleeps in an agent.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from infra.tools.seed import seed_templates
from producers.sdk import Emitter
from streams.routes import default_routes_path
from tests.support.console import ConsoleServer
from tests.support.env import settings_env
from tests.support.sandbox import sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.e2e

AFTER_SECONDS = 6


def sms_then_email(tmp_path: Path) -> Path:
    routes = yaml.safe_load(default_routes_path().read_text())
    routes["routes"]["OrderPlaced"].update(channels=["sms"], fallback={"after": f"{AFTER_SECONDS}s", "unless": "delivered",
                                                                     "to": "email"})
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(routes))
    return path


def history(db, notification_id: str) -> list[tuple[str, str, str | None]]:
    return [tuple(r) for r in db.execute(  # type: ignore[misc]
        "SELECT channel, status, reason FROM status_history WHERE notification_id = %s ORDER BY id", (notification_id,))]


def test_an_undelivered_sms_falls_back_to_email_and_a_delivered_one_does_not(sandbox, db, worker_factory, tmp_path):
    seed_templates(db)
    delivered, undelivered = (f"u-{uuid.uuid4().hex[:8]}" for _ in range(2))
    phones = {delivered: "+4366410000001", undelivered: "+4366410000002"}
    for uid, phone in phones.items():
        db.execute("INSERT INTO users (id, email, phone, locale, time_zone, first_name) VALUES (%s, %s, %s, 'en', 'UTC', 'Ada')",
                   (uid, f"{uid}@example.test", phone))
    sandbox.control.faults("twilio", undelivered_numbers=[phones[undelivered]])

    with ConsoleServer(sandbox.settings) as api:   # the API: Twilio's status callbacks reach its webhook
        settings = sandbox.settings.model_copy(update={
            "routes_file": sms_then_email(tmp_path),
            "api": sandbox.settings.api.model_copy(update={"public_url": api.url})})
        worker_factory(settings)
        env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
        log = open(tmp_path / "scheduler.log", "ab")  # noqa: SIM115 - the child's log, closed in the finally
        scheduler = subprocess.Popen([sys.executable, "-m", "infra.tools.cli.main", "scheduler", "--interval", "0.2",
                                      "--metrics-port", "0", "--housekeeping-every", "0"],
                                     env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            with Emitter(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix) as herald:
                ids = {uid: herald.emit("OrderPlaced", {
                    "user_id": uid, "order_id": "A-1", "currency": "EUR", "total_cents": 4550, "shipping_address": None,
                    "items": [{"sku": "mug", "name": "Mug", "quantity": 2, "unit_price_cents": 1275}]}) for uid in phones}
            emitted = time.monotonic()
            # both SMS go out at once; the receipts say delivered for one, undelivered for the other
            wait_for(lambda: len(sandbox.control.inbox("sms")) == 2, 60, message="both SMS in the sandbox")
            wait_for(lambda: ("sms", "delivered", None) in history(db, ids[delivered]), 60, message="the delivered receipt")
            wait_for(lambda: any(s == "bounced" for _, s, _ in history(db, ids[undelivered])), 60,
                     message="the undelivered receipt")
            assert sandbox.control.inbox("email") == [], "no fallback before its time"

            wait_for(lambda: sandbox.control.inbox("email", to=f"{undelivered}@example.test"), 90,
                     message="the fallback email of the undelivered SMS")
            assert time.monotonic() - emitted >= AFTER_SECONDS
            wait_for(lambda: ("email", "skipped", "fallback_not_needed: delivered") in history(db, ids[delivered]), 60,
                     message="the delivered one's fallback skipped")
            wait_for(lambda: ("email", "sent") in [(c, s) for c, s, _ in history(db, ids[undelivered])], 60,
                     message="the fallback email sent")
            time.sleep(1)
            assert [m["to"] for m in sandbox.control.inbox("email")] == [f"{undelivered}@example.test"]
            assert len(sandbox.control.inbox("sms")) == 2
            assert db.execute("SELECT count(*) FROM scheduled WHERE kind = 'fallback' AND notification_id = ANY(%s) "
                              "AND published_at IS NOT NULL", (list(ids.values()),)).fetchone()[0] == 2, \
                "one check per notification, published"
        finally:
            os.killpg(scheduler.pid, signal.SIGTERM)
            scheduler.wait(30)
            log.close()
