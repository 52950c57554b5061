"""Recurring sends through the real stack: `herald schedules` (the CLI process), two `herald scheduler` processes,
the worker (route, deliver, status), Kafka, PostgreSQL and the sandbox's SendGrid.

A schedule whose occurrence is due now is delivered exactly once (two schedulers claim; a re-publication of the
same occurrence, as after a crash before the claim's commit, is de-duplicated), and the recipient's next occurrence
is the next Monday 09:00 on the recipient's own clock. Pause holds a due occurrence back; resume goes on from now.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from infra.settings import Settings
from tests.integration.test_campaign import template
from tests.support.env import settings_env
from tests.support.sandbox import sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.e2e

TZ = "Pacific/Kiritimati"   # UTC+14: its Monday 09:00 is far from the machine's


def herald(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings_env(settings), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "infra.tools.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def next_monday_0900(after: datetime) -> datetime:
    """Independently of scheduler/cron.py: the next Monday 09:00 in TZ (no DST there), as UTC."""
    local = after.astimezone(ZoneInfo(TZ))
    day = local.date() + timedelta(days=(0 - local.weekday()) % 7)
    candidate = datetime(day.year, day.month, day.day, 9, tzinfo=ZoneInfo(TZ))
    if candidate <= local:
        candidate += timedelta(days=7)
    return candidate.astimezone(UTC)


def test_a_due_occurrence_is_delivered_once_and_the_next_is_computed_in_the_recipients_zone(sandbox, worker_factory, db,
                                                                                            tmp_path):
    settings = sandbox.settings.model_copy(update={"email_provider": "sendgrid", "home": tmp_path})
    ctl = sandbox.control
    tag = settings.app_id
    code, user, sid = f"{tag}_summary", f"{tag}-u", f"{tag}-weekly"
    address = f"{user}@example.org"
    template(db, code, "Your week, {{ user.first_name }}: {{ headline }}")
    db.execute("INSERT INTO users (id, email, first_name, time_zone) VALUES (%s, %s, 'Ada', %s)", (user, address, TZ))

    bad = herald(settings, "schedules", "create", sid, "--cron", "0 9 * *", "--template", code, "--user", user)
    assert bad.returncode == 1 and "five fields" in bad.stderr and "Traceback" not in bad.stderr
    made = herald(settings, "schedules", "create", sid, "--cron", "0 9 * * 1", "--template", code, "--user", user,
                  "--variables", '{"headline": "3 orders"}', "--json")
    assert made.returncode == 0, made.stderr
    first = datetime.fromisoformat(json.loads(made.stdout)["next"][user])
    assert first == next_monday_0900(datetime.now(UTC))

    # the occurrence falls due now
    due = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    db.execute("UPDATE recurring_targets SET next_at = %s WHERE schedule_id = %s", (due, sid))
    worker_factory(settings, agents=["route", "deliver-email", "status"]).wait_ready()
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    logs, scheds = [], []
    for i in range(2):   # two replicas: the claim keeps them off each other's rows
        logs.append(open(tmp_path / f"scheduler{i}.log", "ab"))  # noqa: SIM115 - closed in the finally
        scheds.append(subprocess.Popen(
            [sys.executable, "-m", "infra.tools.cli.main", "scheduler", "--interval", "0.2", "--metrics-port", "0",
             "--housekeeping-every", "0"], env=env, stdout=logs[-1], stderr=subprocess.STDOUT, start_new_session=True))
    try:
        wait_for(lambda: len(ctl.inbox("email", to=address)) >= 1, 120, interval=0.3, message="the weekly summary")
        nid = f"r:{sid}:{user}:{due:%Y%m%dT%H%M%SZ}"
        wait_for(lambda: db.execute("SELECT status FROM notifications WHERE id = %s", (nid,)).fetchone() == ("sent",),
                 60, interval=0.3, message="the occurrence's notification sent")
        next_at, last_at, sent = db.execute("SELECT next_at, last_at, sent FROM recurring_targets WHERE schedule_id = %s",
                                            (sid,)).fetchone()
        assert (last_at, sent) == (due, 1)
        assert next_at == next_monday_0900(datetime.now(UTC))
        local = next_at.astimezone(ZoneInfo(TZ))
        assert (local.weekday(), local.hour, local.minute) == (0, 9, 0)

        # the same occurrence published again (a crash after Kafka took it, before the claim committed): one email
        db.execute("UPDATE recurring_targets SET next_at = %s WHERE schedule_id = %s", (due, sid))
        wait_for(lambda: db.execute("SELECT sent FROM recurring_targets WHERE schedule_id = %s", (sid,)).fetchone() == (2,),
                 60, interval=0.2, message="the occurrence published a second time")

        # paused: a due occurrence is held back; resumed: the next one is computed from now
        assert herald(settings, "schedules", "pause", sid).returncode == 0
        db.execute("UPDATE recurring_targets SET next_at = now() - interval '1 minute' WHERE schedule_id = %s", (sid,))
        time.sleep(3)
        listed = [json.loads(line) for line in herald(settings, "schedules", "list", "--json").stdout.splitlines()]
        mine = next(s for s in listed if s["id"] == sid)
        assert (mine["status"], mine["sent"], mine["recipients"], mine["cron"]) == ("paused", 2, 1, "0 9 * * 1")
        assert herald(settings, "schedules", "resume", sid).returncode == 0
        assert db.execute("SELECT next_at FROM recurring_targets WHERE schedule_id = %s", (sid,)).fetchone()[0] \
            == next_monday_0900(datetime.now(UTC))
        time.sleep(2)
    finally:
        for proc in scheds:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in scheds:
            proc.wait(30)
        for f in logs:
            f.close()
    inbox = ctl.inbox("email", to=address)
    assert len(inbox) == 1 and "Your week, Ada: 3 orders" in inbox[0]["text"]
    assert db.execute("SELECT count(*) FROM notifications WHERE id LIKE %s", (f"r:{sid}:%",)).fetchone()[0] == 1
    assert herald(settings, "schedules", "delete", sid).returncode == 0
    gone = herald(settings, "schedules", "delete", sid)
    assert gone.returncode == 1 and "no schedule" in gone.stderr
