"""A birthday emitted with the SDK for "the next 09:00-ish in the user's zone" is held in PostgreSQL and released by the scheduler on time.

The whole scheduled path with real processes: SDK → events → route (writes the
``scheduled`` row, status ``scheduled``) → ``herald scheduler`` (publishes the
original bytes when due) → route again → a rendered Delivery, never before send_at.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from confluent_kafka import Consumer

from infra.tools.seed import seed_templates
from infra.topics import deliver_topic
from producers.sdk import Emitter, next_local
from schemas.codec import Codec
from tests.support.env import settings_env
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration


def test_birthday_scheduled_in_the_users_zone_is_released_by_the_scheduler_on_time(topics, db, worker_factory, tmp_path):
    settings = topics
    seed_templates(db)
    uid = f"u-{uuid.uuid4().hex[:8]}"
    tz = "Pacific/Kiritimati"  # UTC+14: its wall clock is far from the machine's
    db.execute("INSERT INTO users (id, email, locale, time_zone, first_name) VALUES (%s, %s, 'en', %s, 'Ada')",
               (uid, f"{uid}@example.test", tz))
    # the next whole minute at least 6 s away, as a wall-clock time in the user's zone
    local_now = datetime.now(UTC).astimezone(ZoneInfo(tz))
    wish = (local_now + timedelta(seconds=66)).replace(second=0, microsecond=0)
    send_at = next_local(wish.strftime("%H:%M"), tz, weekday=wish.weekday())
    assert send_at - datetime.now(UTC) > timedelta(seconds=5)

    worker_factory(settings, agents=["route"])
    with Emitter(settings.kafka_bootstrap, topic_prefix=settings.topic_prefix) as herald:
        eid = herald.emit("BirthdayReached", {"user_id": uid, "age": 33}, send_at=send_at)
    wait_for(lambda: db.execute("SELECT 1 FROM scheduled WHERE notification_id = %s OR convert_from(key, 'UTF8') = %s",
                                (eid, uid)).fetchone(), 90, message="the scheduled row")

    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "scheduler.log", "ab")  # noqa: SIM115 - the child's log, closed in the finally
    sched = subprocess.Popen([sys.executable, "-m", "infra.tools.cli.main", "scheduler", "--interval", "0.2", "--metrics-port", "0",
                              "--housekeeping-every", "0"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{settings.app_id}-check",
                  "auto.offset.reset": "earliest"})
    c.subscribe([deliver_topic(settings, "email")])
    try:
        deadline = time.monotonic() + 150
        delivery = None
        while delivery is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                delivery = (m, Codec().decode(m.value()).record)
    finally:
        c.close()
        os.killpg(sched.pid, signal.SIGTERM)
        sched.wait(30)
        log.close()
    assert delivery is not None, "no email delivery after the scheduler released the birthday"
    msg, d = delivery
    assert d["event_id"] == eid and d["address"] == f"{uid}@example.test"
    assert "Happy birthday, Ada!" in d["text"]
    assert msg.timestamp()[1] >= int(send_at.timestamp() * 1000), "released before send_at"
    released = db.execute("SELECT published_at FROM scheduled WHERE convert_from(key, 'UTF8') = %s", (uid,)).fetchone()[0]
    assert released >= send_at
