"""Digests through the real stack: a user's follows collected for a window, one email listing them, exactly once even
when the worker is SIGKILLed as the window closes (the closing record is handled again by the next worker)."""
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
from tests.support.env import settings_env
from tests.support.sandbox import sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = pytest.mark.e2e

WINDOW_SECONDS = 5


def followers_digest(tmp_path: Path, template: str) -> Path:
    routes = yaml.safe_load(default_routes_path().read_text())
    routes["routes"]["UserFollowed"].update(channels=["email"], template=template,
                                            digest={"window": f"{WINDOW_SECONDS}s", "key": ["user_id"], "max": 50})
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump(routes))
    return path


def test_exactly_one_digest_with_every_event_when_the_worker_is_killed_as_its_window_closes(
        sandbox, db, worker_factory, tmp_path):
    seed_templates(db)
    code = f"digest_{sandbox.settings.app_id}"   # the session's database is shared: a template of this test alone
    db.execute("INSERT INTO templates (code, channel, locale, version, subject, body_text, active) "
               "VALUES (%s, 'email', 'default', 1, %s, %s, true)",
               (code, "{{ digest.count }} new followers", "{% for e in digest.events %}{{ e.follower_name }};{% endfor %}"))
    users = [f"u-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for uid in users:
        db.execute("INSERT INTO users (id, email, locale, time_zone) VALUES (%s, %s, 'en', 'UTC')", (uid, f"{uid}@example.test"))
    settings = sandbox.settings.model_copy(update={"routes_file": followers_digest(tmp_path, code)})
    first = worker_factory(settings)
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "scheduler.log", "ab")  # noqa: SIM115 - the child's log, closed in the finally
    scheduler = subprocess.Popen([sys.executable, "-m", "infra.tools.cli.main", "scheduler", "--interval", "0.1",
                                  "--metrics-port", "0", "--housekeeping-every", "0"],
                                 env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    fans = {uid: [f"{uid}-fan{i}" for i in range(5 if n == 0 else 3)] for n, uid in enumerate(users)}
    try:
        with Emitter(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix) as herald:
            for uid, names in fans.items():
                for name in names:
                    herald.emit("UserFollowed", {"user_id": uid, "follower_id": name, "follower_name": name})
        wait_for(lambda: db.execute("SELECT count(*) FROM digest_items WHERE digest_key = ANY(%s)",
                                    (users,)).fetchone()[0] == 8, 60, message="every follow collected")
        assert sandbox.control.inbox("email") == [], "nothing is sent while the window is open"

        # the moment the scheduler publishes a closing record, the worker dies
        wait_for(lambda: db.execute("SELECT count(*) FROM scheduled WHERE kind = 'digest' AND published_at IS NOT NULL "
                                    "AND topic = %s", (settings.topic("events"),)).fetchone()[0] >= 1,
                 WINDOW_SECONDS + 60, interval=0.01, message="a closing record published")
        first.kill()
        worker_factory(settings)

        for uid in fans:
            wait_for(lambda uid=uid: sandbox.control.inbox("email", to=f"{uid}@example.test"), 120,
                     message=f"the digest of {uid}")
        time.sleep(3)   # a second digest would come now
        for uid, names in fans.items():
            [digest] = sandbox.control.inbox("email", to=f"{uid}@example.test")
            assert digest["subject"] == f"{len(names)} new followers"
            assert sorted(filter(None, digest["text"].strip().split(";"))) == sorted(names)
        closed = db.execute("SELECT count(*) FROM digest_windows WHERE digest_key = ANY(%s) AND closed_at IS NOT NULL",
                            (users,)).fetchone()[0]
        assert closed == 2
    finally:
        os.killpg(scheduler.pid, signal.SIGTERM)
        scheduler.wait(30)
        log.close()
