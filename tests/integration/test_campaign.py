"""Campaigns end up on the bulk topic once per recipient, are recorded, resume after Ctrl-C, and report status from PostgreSQL."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer

from infra.kafka.producer import Producer
from infra.kafka.records import TRACE
from infra.settings import Settings
from producers.campaign import CampaignSpec, produce
from producers.campaign_source import Recipient
from schemas.codec import Codec
from streams.stages.status_change import status_record
from tests.support.env import settings_env
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration


def herald(settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings_env(settings)}
    return subprocess.run([sys.executable, "-m", "infra.tools.cli.main", *args], env=env, capture_output=True, text=True, timeout=timeout)


def recipients_of(msgs: list) -> list[dict]:
    """Each recipient of the CampaignChunk records as its own CampaignMessage would read (and its record)."""
    codec = Codec()
    out = []
    for m in msgs:
        chunk = codec.decode(m.value())
        assert chunk.name == "CampaignChunk"
        r = chunk.record
        own = r["user_variables_json"] or [None] * len(r["user_ids"])
        shared = json.loads(r["variables_json"])
        for user_id, variables in zip(r["user_ids"], own, strict=True):
            out.append({"event_id": f"{r['campaign_id']}:{user_id}", "user_id": user_id, "chunk_id": r["chunk_id"],
                        "variables": {**shared, **json.loads(variables)} if variables else shared, "message": m})
    return out


def read_recipients(settings, topic: str, n: int, timeout: float = 90) -> list[dict]:
    """The recipients of the campaign chunks on ``topic``: at least ``n``, and whatever follows them."""
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"{settings.app_id}-read-{time.time_ns()}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([topic])
    got: list = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = [m for m in c.consume(5000, 0.5) if not m.error()]
            got += recipients_of(batch)
            if len(got) >= n and not batch:
                break
    finally:
        c.close()
    return got


def template(db, code: str, body: str = "Hi {{ user.first_name }}", locale: str = "default", channel: str = "email") -> None:
    """An active version of ``code`` (pre-flight refuses a campaign whose template is not there)."""
    db.execute("INSERT INTO templates (code, channel, locale, version, subject, body_text, active) "
               "VALUES (%s, %s, %s, 1, 'Offer', %s, true) ON CONFLICT DO NOTHING", (code, channel, locale, body))


@pytest.fixture
def campaign_templates(db):
    for code in ("spring_sale", "promo"):
        template(db, code)


def test_send_from_a_file_puts_every_recipient_on_the_bulk_topic_in_chunks(topics, db, tmp_path, campaign_templates):
    settings = topics
    users = tmp_path / "vip.jsonl"
    lines = [json.dumps({"user_id": f"u{i}", "variables": {"n": str(i)}}) for i in range(5000)]
    lines.insert(10, "{broken")
    users.write_text("\n".join(lines) + "\n")
    out = herald(settings, "campaign", "send", "-t", "spring_sale", "--users", str(users), "--var", "discount=20%",
                 "--id", f"{settings.app_id}-c1", "--procs", "2", "--chunk-size", "1000")
    assert out.returncode == 0, out.stderr
    assert "line 11: not JSON" in " ".join(out.stderr.split())
    cid = out.stdout.strip()
    assert cid == f"{settings.app_id}-c1"
    row = db.execute("SELECT total, produced, status, template FROM campaigns WHERE id = %s", (cid,)).fetchone()
    assert tuple(row) == (5000, 5000, "produced", "spring_sale")

    got = read_recipients(settings, settings.topic("bulk"), 5000)
    assert len(got) == 5000
    assert {r["event_id"] for r in got} == {f"{cid}:u{i}" for i in range(5000)}
    sample = next(r for r in got if r["user_id"] == "u42")
    assert sample["variables"] == {"discount": "20%", "n": "42"}
    # many recipients per record, each record named by its first recipient's ordinal: a resume names them alike
    chunks = {r["chunk_id"]: r["message"] for r in got}
    assert len(chunks) == 10 and set(chunks) == {f"{cid}:{i}" for i in range(0, 5000, 500)}
    for name, m in chunks.items():
        assert m.key() == name.encode() and dict(m.headers())[TRACE] == name.encode()


def test_ctrl_c_then_resume_sends_every_recipient_without_repeating_the_produced_part(topics, db, tmp_path, campaign_templates):
    settings = topics
    n = 300_000
    users = tmp_path / "all.txt"
    users.write_text("\n".join(f"user-{i:06d}" for i in range(n)) + "\n")
    cid = f"{settings.app_id}-big"
    env = {**os.environ, **settings_env(settings)}
    proc = subprocess.Popen([sys.executable, "-m", "infra.tools.cli.main", "campaign", "send", "-t", "promo", "--users", str(users),
                             "--id", cid, "--procs", "1", "--chunk-size", "5000"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def produced() -> int:
        row = db.execute("SELECT produced FROM campaigns WHERE id = %s", (cid,)).fetchone()
        return row[0] if row else 0

    wait_for(lambda: produced() >= 20_000, 120, message="part of the campaign produced")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert f"--resume {cid}" in " ".join(stderr.split())
    status, first = db.execute("SELECT status, produced FROM campaigns WHERE id = %s", (cid,)).fetchone()
    assert status == "interrupted" and 20_000 <= first < n

    out = herald(settings, "campaign", "send", "--resume", cid, "--procs", "2", "--chunk-size", "5000", timeout=300)
    assert out.returncode == 0, out.stderr
    said = " ".join(out.stderr.split())  # rich wraps lines
    assert f"{first:,} already produced" in said
    assert f"({n - first:,} now" in said  # the resume sent only what was left
    assert tuple(db.execute("SELECT status, produced, total FROM campaigns WHERE id = %s", (cid,)).fetchone()) == ("produced", n, n)

    ids = [r["event_id"] for r in read_recipients(settings, settings.topic("bulk"), n, timeout=180)]
    assert set(ids) == {f"{cid}:user-{i:06d}" for i in range(n)}
    # only the chunk in flight at Ctrl-C can be on the topic twice, with the same event id (de-duplicated downstream)
    assert len(ids) - n <= 5000


def test_send_from_a_query(topics, db, campaign_templates):
    settings = topics
    tag = settings.app_id
    db.execute("INSERT INTO users (id, email, locale) SELECT %s || '-' || i, 'x' || i || '@example.com', "
               "CASE WHEN i %% 2 = 0 THEN 'de' ELSE 'en' END FROM generate_series(1, 400) AS i", (tag,))
    out = herald(settings, "campaign", "send", "-t", "promo", "--query",
                 f"SELECT id, json_build_object('loc', locale) FROM users WHERE id LIKE '{tag}-%' AND locale = 'de'")
    assert out.returncode == 0, out.stderr
    cid = out.stdout.strip()
    assert db.execute("SELECT total, produced FROM campaigns WHERE id = %s", (cid,)).fetchone() == (200, 200)
    recs = read_recipients(settings, settings.topic("bulk"), 200)
    assert len(recs) == 200 and all(r["variables"] == {"loc": "de"} for r in recs)
    assert {r["user_id"] for r in recs} == {f"{tag}-{i}" for i in range(2, 401, 2)}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["campaign", "send", "-t", "promo"], "exactly one recipient source"),
        (["campaign", "send", "-t", "promo", "--query", "DELETE FROM users"], "must be a SELECT"),
        (["campaign", "send", "-t", "promo", "--query", "SELECT nope FROM nowhere"], "recipient query failed"),
        (["campaign", "send", "--resume", "no-such-campaign"], "no campaign no-such-campaign"),
        (["campaign", "status", "no-such-campaign"], "no campaign no-such-campaign"),
    ],
)
def test_bad_requests_get_one_clear_line(topics, args, message, campaign_templates):
    out = herald(topics, *args)
    assert out.returncode == 1
    assert message in " ".join(out.stderr.split()) and "Traceback" not in out.stderr


def test_an_unreachable_broker_stops_the_campaign_at_the_acknowledged_prefix():
    spec = CampaignSpec("c-down", "promo", {"file": "/x"})
    nowhere = Settings(kafka_bootstrap="127.0.0.1:1")
    report = produce(nowhere, "nowhere.bulk", spec, [Recipient(f"u{i}") for i in range(10)], skip=4,
                     chunk_size=3, producer_extra={"message.timeout.ms": 1500})
    assert report.errors and report.produced == 4 and report.sent_now == 0


def test_status_counts_come_from_the_status_data(topics, db, worker_factory):
    settings = topics
    cid = f"{settings.app_id}-st"
    db.execute("INSERT INTO campaigns (id, template, source, total, produced, status) VALUES (%s, 'promo', '{}', 10, 10, 'produced')", (cid,))
    codec, out = Codec(), Producer(settings)
    plan = [("sent", None)] * 3 + [("delivered", None)] * 2 + [("suppressed", "preferences")] * 2 + \
           [("rate_limited", "email:day"), ("failed", "Permanent")]
    records = []
    for i, (st, reason) in enumerate(plan):
        nid = f"{cid}:u{i}"
        records.append(status_record(codec, settings.topic("status"), notification_id=nid, event_id=nid, user_id=f"u{i}",
                                     status="queued", campaign_id=cid, event_type="CampaignMessage"))
        records.append(status_record(codec, settings.topic("status"), notification_id=nid, event_id=nid, user_id=f"u{i}",
                                     status=st, reason=reason, campaign_id=cid, channel="email"))
    out.send_all_blocking(records)
    worker_factory(settings, agents=["status"])
    wait_for(lambda: db.execute("SELECT count(*) FROM notifications WHERE campaign_id = %s AND status <> 'queued'",
                                (cid,)).fetchone()[0] == 9, 90, message="statuses written")
    res = herald(settings, "campaign", "status", cid, "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert (s["produced"], s["in_flight"], s["sent"], s["delivered"]) == (10, 1, 5, 2)
    assert s["suppressed"] == {"suppressed: preferences": 2}
    assert (s["rate_limited"], s["failed"], s["dead_lettered"]) == (1, 1, 0)
    table = herald(settings, "campaign", "status", cid)
    assert table.returncode == 0 and "rate-limited" in table.stdout and "suppressed: preferences" in table.stdout
