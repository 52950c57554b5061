"""The scheduler publishes each due row once, never before its time by the database clock, and keeps going past bad rows and broker outages."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from infra.settings import Settings
from scheduler.outbox import Outbox
from tests.support.env import settings_env
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration


def _insert(db, settings: Settings, n: int, spread_s: float, offset_s: float = 0.0, tag: str = "r") -> None:
    """``n`` rows for the test's events topic, due between ``offset_s`` and ``offset_s + spread_s`` from the DB's now."""
    topic = settings.topic("events")
    with db.cursor() as cur:
        cur.execute(
            """
            INSERT INTO scheduled (due_at, topic, key, value, headers, kind)
            SELECT now() + make_interval(secs => %s + %s * random()), %s, convert_to('user-' || i, 'UTF8'),
                   convert_to(%s || '-' || i, 'UTF8'), jsonb_build_object('herald-trace-id', %s || '-' || i), 'send_at'
            FROM generate_series(1, %s) AS i
            """,
            (offset_s, spread_s, topic, tag, tag, n),
        )


def _consume_all(settings: Settings, topic: str, expected: int, timeout: float) -> list:
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": settings.app_id + "-check",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got: list = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < expected and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if not m.error():
                    got.append(m)
        # anything beyond the expected count would be a duplicate: read a little longer
        quiet_until = time.monotonic() + 3
        while time.monotonic() < quiet_until:
            got += [m for m in c.consume(1000, 0.5) if not m.error()]
    finally:
        c.close()
    return got


class _SchedulerProcess:
    def __init__(self, settings: Settings, log: Path) -> None:
        env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
        self._log = open(log, "ab")  # noqa: SIM115 - the child's log, closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infra.tools.cli.main", "scheduler", "--interval", "0.2", "--metrics-port", "0",
             "--housekeeping-every", "0", "--loglevel", "info"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


@pytest.fixture
def clean_outbox(db):
    """The session's database is shared by tests: leave no rows behind for the next test's schedulers."""
    db.execute("DELETE FROM scheduled WHERE published_at IS NULL")
    yield
    db.execute("DELETE FROM scheduled WHERE published_at IS NULL")


def test_two_schedulers_publish_10k_due_rows_once_each_and_none_early(topics, db, clean_outbox, tmp_path):
    settings = topics
    _insert(db, settings, 10_000, spread_s=6.0, offset_s=-2.0, tag="due")   # some already due, most within 4 s
    _insert(db, settings, 50, spread_s=60.0, offset_s=3600.0, tag="later")  # due in an hour: must stay
    due = {vid: int(ms) for vid, ms in db.execute(
        "SELECT convert_from(value, 'UTF8'), floor(extract(epoch FROM due_at) * 1000) FROM scheduled WHERE topic = %s",
        (settings.topic("events"),))}
    schedulers = [_SchedulerProcess(settings, tmp_path / f"scheduler-{i}.log") for i in range(2)]
    try:
        msgs = _consume_all(settings, settings.topic("events"), 10_000, timeout=120)
        wait_for(lambda: db.execute("SELECT count(*) FROM scheduled WHERE published_at IS NOT NULL AND topic = %s",
                                    (settings.topic("events"),)).fetchone()[0] == 10_000, 30, message="rows marked published")
    finally:
        for s in schedulers:
            s.stop()
    values = [m.value().decode() for m in msgs]
    assert len(values) == 10_000, f"{len(values)} records published for 10000 due rows"
    assert len(set(values)) == 10_000, "a row was published twice"
    assert all(v.startswith("due-") for v in values), "a row due in an hour was published"
    early = [v for m, v in zip(msgs, values, strict=True) if m.timestamp()[1] < due[v]]
    assert not early, f"{len(early)} published before due_at, e.g. {early[:3]}"
    for m in msgs[:100]:  # key and headers exactly as stored
        i = m.value().decode().split("-", 1)[1]
        assert m.key() == f"user-{i}".encode()
        assert dict(m.headers()) == {"herald-trace-id": f"due-{i}".encode()}
    left = db.execute("SELECT count(*) FROM scheduled WHERE published_at IS NULL AND topic = %s",
                      (settings.topic("events"),)).fetchone()[0]
    assert left == 50


def test_a_row_kafka_refuses_backs_off_and_the_rest_of_the_batch_is_published(topics, db, clean_outbox, caplog):
    settings = topics
    topic = settings.topic("events")
    db.execute("INSERT INTO scheduled (due_at, topic, key, value, headers) VALUES (now(), %s, 'k', %s, %s)",
               (topic, b"x" * 2_000_000, '{"herald-trace-id": "trace-big"}'))  # over the producer's message.max.bytes
    db.execute("INSERT INTO scheduled (due_at, topic, key, value, headers) VALUES (now(), %s, 'k', 'fine', '{\"h\": \"1\"}')", (topic,))
    db.execute("INSERT INTO scheduled (due_at, topic, key, value, headers) VALUES (now(), %s, 'k', 'bad-headers', '\"oops\"')", (topic,))
    outbox = Outbox(settings.dsn, settings)
    try:
        r = outbox.drain()
    finally:
        outbox.close()
    assert (r.claimed, r.published, r.refused) == (3, 1, 2)
    rows = {bytes(v)[:11]: (p, a, e, late) for v, p, a, e, late in db.execute(
        "SELECT value, published_at, attempts, last_error, due_at > now() FROM scheduled WHERE topic = %s", (topic,))}
    published, attempts, error, backed_off = rows[b"x" * 11]
    assert published is None and attempts == 1 and backed_off and "size" in error.lower()
    published, attempts, error, backed_off = rows[b"bad-headers"]
    assert published is None and attempts == 1 and backed_off and "JSON object" in error
    assert rows[b"fine"][0] is not None
    msgs = _consume_all(settings, topic, 1, timeout=30)
    assert [(m.value(), dict(m.headers())) for m in msgs] == [(b"fine", {"h": b"1"})]
    # each refused row has a line of its own, with its record's trace id (none for headers that do not parse)
    refused = {getattr(r, "trace_id", None) for r in caplog.records if "refused" in r.getMessage()}
    assert refused == {"trace-big", None}


def test_an_unreachable_broker_leaves_rows_due_until_it_answers(topics, db, clean_outbox):
    settings = topics
    _insert(db, settings, 20, spread_s=0.0, offset_s=-1.0, tag="wait")
    down = Outbox(settings.dsn, settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"}), delivery_timeout=2.0)
    try:
        r = down.claim_and_publish()
    finally:
        down._producer.purge()  # do not let this producer retry after the test
        down._drop_connection()
    assert (r.claimed, r.published, r.refused, r.transient) == (20, 0, 0, 20)
    row = db.execute("SELECT count(*), max(attempts) FROM scheduled WHERE published_at IS NULL AND topic = %s",
                     (settings.topic("events"),)).fetchone()
    assert tuple(row) == (20, 0)  # untouched: no attempt spent, nothing backed off
    up = Outbox(settings.dsn, settings)
    try:
        assert up.drain().published == 20
    finally:
        up.close()
    assert len(_consume_all(settings, settings.topic("events"), 20, timeout=30)) == 20


def test_scheduler_cli_once_reports_what_it_published(topics, db, clean_outbox):
    settings = topics
    _insert(db, settings, 5, spread_s=0.0, offset_s=-1.0, tag="cli")
    env = {**os.environ, **settings_env(settings)}
    out = subprocess.run([sys.executable, "-m", "infra.tools.cli.main", "scheduler", "--once"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "published 5 due record(s)" in out.stdout
    assert db.execute("SELECT count(*) FROM scheduled WHERE published_at IS NULL AND topic = %s",
                      (settings.topic("events"),)).fetchone()[0] == 0
