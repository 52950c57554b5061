"""`herald stack up` twice is harmless, `status` says what answers, migrations run twice harmlessly, topics get their partitions."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from confluent_kafka.admin import AdminClient

from infra.db import migrate
from infra.settings import Settings
from infra.topics import ensure_topics, topic_specs
from tests.support.env import settings_env

pytestmark = pytest.mark.integration


def _herald(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings_env(settings)}
    return subprocess.run([sys.executable, "-m", "infra.tools.cli.main", *args], capture_output=True, text=True, env=env, timeout=120)


def test_stack_up_twice_is_harmless_and_creates_the_topics(settings: Settings):
    first = _herald(settings, "stack", "up")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("already running") == 3
    second = _herald(settings, "stack", "up")
    assert second.returncode == 0, second.stderr
    assert "0 created" in second.stdout
    md = AdminClient({"bootstrap.servers": settings.kafka_bootstrap}).list_topics(timeout=10)
    for spec in topic_specs(settings):
        assert len(md.topics[spec.name].partitions) == spec.partitions, spec.name
    assert len(md.topics[settings.topic("events")].partitions) == settings.partitions
    assert len(md.topics[settings.topic("dlq")].partitions) == settings.small_partitions


def test_stack_status_prints_each_component_and_whether_it_answers(settings: Settings):
    ok = _herald(settings, "stack", "status")
    assert ok.returncode == 0
    for name, address in [("postgresql", "127.0.0.1:5432"), ("redis", "127.0.0.1:6379"), ("kafka", "127.0.0.1:9092")]:
        line = next(row for row in ok.stdout.splitlines() if name in row)
        assert address in line and "yes" in line
    nothing_there = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})
    bad = _herald(nothing_there, "stack", "status")
    assert bad.returncode == 1
    assert "no" in next(row for row in bad.stdout.splitlines() if "kafka" in row)


def test_a_worker_without_a_broker_waits_then_says_what_to_do_without_a_traceback(settings: Settings):
    nothing_there = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})
    t0 = time.monotonic()
    out = _herald(nothing_there, "worker", "--wait-kafka", "2")
    assert out.returncode == 1
    assert time.monotonic() - t0 >= 2
    said = " ".join(out.stderr.split())
    assert "waiting up to 2 s for Kafka at 127.0.0.1:1" in said
    assert "did not answer within 2 s" in said and "herald stack up" in said
    assert "Traceback" not in out.stderr + out.stdout


def test_migrations_run_twice_harmlessly(settings: Settings, db):
    assert migrate(settings) == []  # the session database is already migrated
    tables = {r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"users", "devices", "preferences", "templates", "notifications", "status_history", "deliveries",
            "scheduled", "campaigns", "dedup", "schema_migrations"} <= tables
    done = _herald(settings, "db", "migrate")
    assert done.returncode == 0 and "up to date" in done.stdout


def test_ensure_topics_is_idempotent(topics: Settings):
    assert ensure_topics(topics) == []
