"""`herald dlq` against a real DLQ topic: list and stats with filters, show decoded, replay at a bounded rate."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer

from infra.kafka.dead_letters import DeadLetter, dead_letter
from infra.kafka.producer import Producer
from infra.kafka.records import TRACE, InRecord
from infra.settings import Settings
from schemas.codec import Codec
from streams.stages.status_change import status_record
from tests.support.env import settings_env

pytestmark = pytest.mark.integration


def herald(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings_env(settings), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "infra.tools.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def read_all(settings: Settings, topic: str, n: int, timeout: float = 30) -> list:
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"check-{uuid.uuid4().hex[:8]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got, deadline = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and not m.error():
            got.append(m)
    time.sleep(1)
    while (m := c.poll(0.5)) is not None:   # anything beyond n is a duplicate
        if not m.error():
            got.append(m)
    c.close()
    return got


@pytest.fixture
def dlq(topics):
    """A DLQ with dead letters from four stages; returns (settings, the valid StatusChange bytes)."""
    s = topics
    codec = Codec()
    good = status_record(codec, s.topic("status"), notification_id="n-1", event_id="e-1", user_id="u-1", status="sent").value
    dlq_topic = s.topic("dlq")

    def dl(topic: str, offset: int, value: bytes, why: DeadLetter):
        return dead_letter(InRecord(topic, 0, offset, b"user-%d" % offset, value, [(TRACE, b"trace-%d" % offset)]), why, dlq_topic)

    Producer(s).send_all_blocking([
        dl(s.topic("events"), 1, b"garbage-1", DeadLetter("decode", "not_avro", "not Avro")),
        dl(s.topic("events"), 2, b"garbage-2", DeadLetter("decode", "not_avro", "not Avro")),
        dl(s.topic("events"), 3, b"\xc3\x01" + b"\0" * 8, DeadLetter("route", "no_route", "no route for X")),
        dl(s.topic("deliver.email"), 4, b"d-4", DeadLetter("deliver", "Retryable", "503", attempts=4, first_failure_ms=1)),
        dl(s.topic("status"), 5, good, DeadLetter("status", "IntegrityError", "boom")),
    ])
    return s, good


def lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_list_and_stats_filter_by_stage_reason_origin_time_and_limit(dlq):
    s, _ = dlq
    r = herald(s, "dlq", "list", "--json")
    assert r.returncode == 0, r.stderr
    assert [e["key"] for e in lines(r.stdout)] == ["user-1", "user-2", "user-3", "user-4", "user-5"]

    by_stage = lines(herald(s, "dlq", "list", "--json", "--stage", "decode").stdout)
    assert [e["key"] for e in by_stage] == ["user-1", "user-2"]
    assert by_stage[0]["origin_topic"] == s.topic("events") and by_stage[0]["trace_id"] == "trace-1"
    listed = herald(s, "dlq", "list", "--json", "--reason", "Retryable", "--reason", "no_route").stdout
    assert [e["key"] for e in lines(listed)] == ["user-3", "user-4"]
    assert [e["key"] for e in lines(herald(s, "dlq", "list", "--json", "--origin-topic", s.topic("status")).stdout)] == ["user-5"]
    assert len(lines(herald(s, "dlq", "list", "--json", "--limit", "2").stdout)) == 2
    assert lines(herald(s, "dlq", "list", "--json", "--since", "10m").stdout)
    assert lines(herald(s, "dlq", "list", "--json", "--until", "10m").stdout) == []
    deliver = lines(herald(s, "dlq", "list", "--json", "--stage", "deliver").stdout)[0]
    assert (deliver["attempts"], deliver["first_failure_ms"]) == (4, 1)

    stats = json.loads(herald(s, "dlq", "stats", "--json").stdout)
    assert stats["total"] == 5
    assert {(x["stage"], x["reason"]): x["count"] for x in stats["by_reason"]} == {
        ("decode", "not_avro"): 2, ("route", "no_route"): 1, ("deliver", "Retryable"): 1, ("status", "IntegrityError"): 1}
    table = herald(s, "dlq", "stats").stdout
    assert "not_avro" in table and "IntegrityError" in table


def test_show_decodes_avro_and_explains_what_does_not_decode(dlq):
    s, _ = dlq
    rows = {e["key"]: e["coord"] for e in lines(herald(s, "dlq", "list", "--json").stdout)}
    shown = json.loads(herald(s, "dlq", "show", rows["user-5"], "--json").stdout)
    written = f"StatusChange v{Codec().catalog.latest('StatusChange').version}"   # the status was encoded with the latest
    assert shown["value"]["schema"] == written
    assert shown["value"]["record"]["notification_id"] == "n-1"
    assert dict(shown["headers"])["herald-dlq-error-class"] == "IntegrityError"
    garbage = json.loads(herald(s, "dlq", "show", rows["user-1"], "--json").stdout)
    assert garbage["value"]["undecodable"] == "not_avro" and garbage["value"]["preview"] == "garbage-1"
    unknown = json.loads(herald(s, "dlq", "show", rows["user-3"], "--json").stdout)
    assert unknown["value"]["undecodable"] == "unknown_schema"
    text = herald(s, "dlq", "show", rows["user-5"]).stdout
    assert written in text and "herald-trace-id" in text


@pytest.mark.parametrize("args, message", [
    (["show", "nonsense"], "PARTITION:OFFSET"),
    (["show", "7:0"], "no partition 7"),
    (["show", "0:999"], "no record at 0:999"),
    (["list", "--since", "last tuesday"], "ISO 8601"),
    (["replay", "--rate", "0"], "--rate must be positive"),
])
def test_bad_input_is_one_clear_line_without_traceback(dlq, args, message):
    s, _ = dlq
    r = herald(s, "dlq", *args)
    assert r.returncode != 0
    assert message in r.stderr and "Traceback" not in r.stderr


def test_a_missing_dlq_topic_is_a_clear_error(settings):
    r = herald(settings, "dlq", "list")
    assert r.returncode == 1 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_dry_run_sends_nothing_and_replay_sends_the_selection_home_at_the_rate(dlq):
    s, good = dlq
    dry = herald(s, "dlq", "replay", "--stage", "decode", "--dry-run")
    assert dry.returncode == 0 and "would replay 2" in dry.stdout
    assert read_all(s, s.topic("events"), 1, timeout=3) == []

    t0 = time.monotonic()
    r = herald(s, "dlq", "replay", "--stage", "decode", "--stage", "status", "--rate", "2", "--yes")
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert "replayed 3, failed 0, skipped 0" in r.stdout
    assert took >= 1.0   # 3 records at 2/s: the last one leaves a second after the first

    events = read_all(s, s.topic("events"), 2)
    assert sorted(m.value() for m in events) == [b"garbage-1", b"garbage-2"]
    h = dict(events[0].headers())
    assert h["herald-dlq-replays"] == b"1" and TRACE in h
    assert not any(k.startswith("herald-dlq-") and k != "herald-dlq-replays" for k in h)
    (status,) = read_all(s, s.topic("status"), 1)
    assert status.value() == good and status.key() == b"user-5"


def test_replay_refuses_records_at_the_replay_limit(topics):
    s = topics
    rec = InRecord(s.topic("events"), 0, 1, b"k", b"poison", [("herald-dlq-replays", b"2")])
    Producer(s).send_all_blocking([dead_letter(rec, DeadLetter("decode", "not_avro", "x"), s.topic("dlq"))])
    r = herald(s, "dlq", "replay", "--max-replays", "2", "--yes")
    assert r.returncode == 0 and "skipped 1: replay limit (2) reached" in r.stdout and "nothing to replay" in r.stdout
    assert read_all(s, s.topic("events"), 1, timeout=3) == []
