"""Housekeeping: old published outbox rows and devices inactive for 30 days go; everything else stays; one replica at a time."""
from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest
from pydantic import SecretStr

from scheduler.housekeeping import run_jobs
from scheduler.service import Scheduler, SchedulerConfig
from tests.support.env import settings_env

pytestmark = pytest.mark.integration


def test_housekeeping_removes_only_what_is_old(settings, db):
    t = settings.app_id
    topic = f"{t}.events"
    db.execute("""
        INSERT INTO scheduled (due_at, topic, key, value, published_at) VALUES
          (now() - interval '9 days', %(t)s, 'old-published', 'v', now() - interval '8 days'),
          (now() - interval '2 days', %(t)s, 'recent-published', 'v', now() - interval '1 day'),
          (now() - interval '9 days', %(t)s, 'never-published', 'v', NULL)
    """, {"t": topic})
    db.execute("INSERT INTO users (id) VALUES (%s)", (f"{t}-u",))
    db.execute("""
        INSERT INTO devices (user_id, token, platform, active, last_seen_at, deactivated_at) VALUES
          (%(u)s, %(p)s || 'stale', 'android', true, now() - interval '31 days', NULL),
          (%(u)s, %(p)s || 'off-long', 'android', false, now() - interval '1 day', now() - interval '31 days'),
          (%(u)s, %(p)s || 'fresh', 'android', true, now() - interval '2 days', NULL)
    """, {"u": f"{t}-u", "p": t})
    sched = Scheduler(settings, SchedulerConfig(keep_published_days=7))
    try:
        done = sched.housekeeping()
    finally:
        sched.close()
    assert done is not None and done["purge_published"] >= 1 and done["stale_devices"] >= 2
    keys = sorted(bytes(k).decode() for (k,) in db.execute("SELECT key FROM scheduled WHERE topic = %s", (topic,)))
    assert keys == ["never-published", "recent-published"]
    tokens = [tok for (tok,) in db.execute("SELECT token FROM devices WHERE user_id = %s", (f"{t}-u",))]
    assert tokens == [f"{t}fresh"]
    db.execute("DELETE FROM scheduled WHERE topic = %s", (topic,))


def test_a_second_replica_skips_housekeeping_while_one_runs_it(settings, db):
    with psycopg.connect(settings.dsn, autocommit=True) as holder:
        assert run_jobs(holder, []) == {}  # takes and releases the lock
        holder.execute("SELECT pg_advisory_lock(%s)", (0x48_4B_45_45_50,))
        ran = []
        with psycopg.connect(settings.dsn, autocommit=True) as other:
            assert run_jobs(other, [lambda c: ran.append(1) or 1]) is None
        assert ran == []
        holder.execute("SELECT pg_advisory_unlock(%s)", (0x48_4B_45_45_50,))


def _herald(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings_env(settings), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "infra.tools.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_herald_devices_cleanup_removes_only_devices_inactive_for_the_given_days(settings, db):
    t = settings.app_id
    db.execute("INSERT INTO users (id) VALUES (%s)", (f"{t}-u",))
    db.execute("""
        INSERT INTO devices (user_id, token, platform, active, last_seen_at, deactivated_at) VALUES
          (%(u)s, %(p)s || 'unseen-40d', 'ios', true, now() - interval '40 days', NULL),
          (%(u)s, %(p)s || 'off-12d', 'android', false, now() - interval '1 day', now() - interval '12 days'),
          (%(u)s, %(p)s || 'seen-today', 'android', true, now(), NULL)
    """, {"u": f"{t}-u", "p": t})
    mine = "SELECT token FROM devices WHERE user_id = %s ORDER BY token"
    r = _herald(settings, "devices", "cleanup")
    assert r.returncode == 0, r.stderr
    assert "inactive for 30 days" in r.stdout
    assert [tok for (tok,) in db.execute(mine, (f"{t}-u",))] == [f"{t}off-12d", f"{t}seen-today"]
    r = _herald(settings, "devices", "cleanup", "--days", "10")
    assert r.returncode == 0 and "removed 1 device(s)" in r.stdout
    assert [tok for (tok,) in db.execute(mine, (f"{t}-u",))] == [f"{t}seen-today"]


def test_herald_devices_cleanup_without_postgresql_says_what_to_do_without_a_traceback(settings):
    down = settings.model_copy(update={"database_url": SecretStr("postgresql://herald@127.0.0.1:1/herald")})
    r = _herald(down, "devices", "cleanup")
    assert r.returncode != 0
    assert "PostgreSQL unreachable" in r.stderr + r.stdout and "herald stack up" in r.stderr + r.stdout
    assert "Traceback" not in r.stderr + r.stdout
