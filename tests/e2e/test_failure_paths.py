"""Failure paths through the whole worker (route, deliver, retry tiers, status) and the sandbox providers."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from infra.kafka.producer import Producer
from infra.kafka.records import TRACE, OutRecord
from infra.settings import Settings
from infra.tools.seed import seed_templates
from schemas.codec import Codec
from tests.support.env import settings_env
from tests.support.sandbox import sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.e2e

ENV = {"HERALD_DELIVER__BREAKER_FAILURES": "1000"}   # these tests are about the ladder, not the circuit


def herald(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings_env(settings), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "infra.tools.cli.main", *args], env=env, capture_output=True, text=True, timeout=180)


def reset_requested(settings: Settings, db, address: str) -> str:
    uid, eid = f"u-{uuid.uuid4().hex[:8]}", f"e-{uuid.uuid4().hex[:12]}"
    db.execute("INSERT INTO users (id, email, locale, time_zone, first_name) VALUES (%s,%s,'en','UTC','Ada')", (uid, address))
    ev = {"event_id": eid, "occurred_at": int(time.time() * 1000), "user_id": uid,
          "reset_url": "https://example.test/r/1", "expires_in_minutes": 30}
    Producer(settings).send_all_blocking(
        [OutRecord(settings.topic("events"), uid.encode(), Codec().encode("PasswordResetRequested", ev), [(TRACE, eid.encode())])])
    return eid


def status_of(db, eid: str) -> str | None:
    row = db.execute("SELECT status FROM notifications WHERE event_id=%s", (eid,)).fetchone()
    return row[0] if row else None


def inbox_count(ctl, address: str) -> int:
    return len(ctl.inbox("email", to=address))


@pytest.fixture
def pipeline(sandbox, db, worker_factory):
    seed_templates(db)
    settings = sandbox.settings.model_copy(update={"email_provider": "sendgrid"})
    w = worker_factory(settings, extra_env=ENV)
    return settings, sandbox.control, w


def test_an_outage_lasting_two_attempts_then_recovering_delivers_exactly_once(pipeline, db):
    settings, ctl, _ = pipeline
    ctl.faults("sendgrid", storm=2)   # attempts 1 and 2 get 503, attempt 3 is accepted
    address = f"{uuid.uuid4().hex[:8]}@example.org"
    t0 = time.monotonic()
    eid = reset_requested(settings, db, address)
    wait_for(lambda: status_of(db, eid) == "sent", 180, interval=0.5, message="status sent")
    took = time.monotonic() - t0
    time.sleep(3)   # a duplicate would show up now
    assert inbox_count(ctl, address) == 1
    assert ctl.requests("sendgrid") == 3
    assert took >= settings.retry_delays[0] + settings.retry_delays[1]   # waited in tiers 1 and 2, never early
    assert db.execute("SELECT d.status, d.attempts FROM delivery_state d JOIN notifications n ON n.id = d.notification_id "
                      "WHERE n.event_id=%s", (eid,)).fetchall() == [("sent", 3)]
    # each failed attempt is in the history, with its error and the tier it waited in (not only attempts = 3)
    history = db.execute("SELECT h.status, h.reason FROM status_history h JOIN notifications n ON n.id = h.notification_id "
                         "WHERE n.event_id = %s ORDER BY h.id", (eid,)).fetchall()
    assert [status for status, _ in history] == ["queued", "retrying", "retrying", "sent"]
    assert history[1][1].startswith("attempt 1 failed: ") and "retry tier 1" in history[1][1]
    assert history[2][1].startswith("attempt 2 failed: ") and "retry tier 2" in history[2][1]


def test_a_permanent_outage_dead_letters_and_a_replay_after_recovery_delivers_exactly_once(pipeline, db):
    settings, ctl, _ = pipeline
    ctl.faults("sendgrid", storm=-1)
    address = f"{uuid.uuid4().hex[:8]}@example.org"
    eid = reset_requested(settings, db, address)
    wait_for(lambda: status_of(db, eid) == "failed", 180, interval=0.5, message="status failed after the ladder")
    listed = herald(settings, "dlq", "list", "--json", "--stage", "deliver")
    assert listed.returncode == 0, listed.stderr
    assert '"attempts": 4' in listed.stdout   # the first attempt and one per tier
    assert ctl.requests("sendgrid") == 4
    assert inbox_count(ctl, address) == 0

    ctl.clear_faults()
    r = herald(settings, "dlq", "replay", "--stage", "deliver", "--yes")
    assert r.returncode == 0 and "replayed 1, failed 0" in r.stdout, r.stdout + r.stderr
    wait_for(lambda: status_of(db, eid) == "sent", 120, interval=0.5, message="status sent after the replay")
    assert inbox_count(ctl, address) == 1

    # replaying the same selection again passes the ledger: nothing is sent twice
    again = herald(settings, "dlq", "replay", "--stage", "deliver", "--yes")
    assert again.returncode == 0 and "replayed 1" in again.stdout
    time.sleep(5)
    assert inbox_count(ctl, address) == 1
    assert ctl.requests("sendgrid") == 5


def test_a_replayed_poison_message_lands_in_the_dlq_again_with_its_count_and_nothing_else_is_affected(pipeline, db):
    settings, ctl, _ = pipeline
    # not 0x00 first: that byte opens the Confluent framing, whose dead letter (without a registry) is no_registry
    Producer(settings).send_all_blocking([OutRecord(settings.topic("events"), b"poison", b"\x01not avro")])
    wait_for(lambda: '"not_avro"' in herald(settings, "dlq", "list", "--json").stdout, 120, interval=1,
             message="poison dead-lettered")

    r = herald(settings, "dlq", "replay", "--stage", "decode", "--yes")
    assert r.returncode == 0 and "replayed 1" in r.stdout, r.stdout + r.stderr
    address = f"{uuid.uuid4().hex[:8]}@example.org"
    eid = reset_requested(settings, db, address)   # a good event right behind the poison

    def copies():
        return [line for line in herald(settings, "dlq", "list", "--json").stdout.splitlines() if '"poison"' in line]

    rows = wait_for(lambda: len(c := copies()) == 2 and c, 120, interval=1, message="the replay dead-lettered again")
    assert '"replays": 0' in rows[0] and '"replays": 1' in rows[1]
    wait_for(lambda: status_of(db, eid) == "sent", 120, interval=0.5, message="the good event delivered")
    assert inbox_count(ctl, address) == 1

    # no loops: the first copy is superseded, the second is at the limit
    again = herald(settings, "dlq", "replay", "--stage", "decode", "--max-replays", "1", "--yes")
    assert again.returncode == 0 and "nothing to replay" in again.stdout
    assert "superseded" in again.stdout and "replay limit (1)" in again.stdout
    stats = herald(settings, "dlq", "stats", "--json").stdout
    assert '"total": 2' in stats
