"""DESIGN.md §9 under fire: a campaign and interactive events keep flowing through Redis, PostgreSQL and
broker restarts, a rebalance and a worker started while the broker is away, and every address gets its
email exactly once.

The test stops and starts the shared stack's own services (the ones `herald stack up` started) and
leaves them running. Each outage is taken while a wave of work is waiting for the worker, so the
worker meets it for certain; the assertions are the reliability promises: nothing lost, nothing twice.
"""
from __future__ import annotations

import time
from collections import Counter

import psycopg
import pytest

from infra.kafka.producer import Producer
from infra.kafka.records import TRACE, OutRecord
from infra.settings import Settings
from infra.tools.seed import seed_templates
from infra.tools.stack.kafka import KafkaStack
from infra.tools.stack.postgres import PostgresStack
from infra.tools.stack.redis import RedisStack
from producers.campaign import CampaignSpec, create, produce
from producers.campaign_source import Recipient
from schemas.codec import Codec
from tests.support.sandbox import sandbox  # noqa: F401 - fixture
from tests.support.worker import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

WAVE = 300
WAVES = 5


def query(settings: Settings, sql: str, *args) -> list[tuple]:
    """A fresh connection per query: the test restarts PostgreSQL under its own feet."""
    with psycopg.connect(settings.dsn, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(sql, args).fetchall()


def _what_the_workers_said(workers, lines: int = 40) -> str:
    """Herald's own warnings and errors and Faust's state changes, the last lines of each worker: a failure explains itself."""
    keep = ('"herald.runner"', '"herald.engine"', '"herald.retry"', '"herald.worker"', '"faust.worker"', "Traceback",
            '"level": "error", "logger": "herald', "crash", "Stopping")
    out = []
    for i, w in enumerate(workers):
        said = [ln[:300] for ln in w.log_text().splitlines() if any(k in ln for k in keep)]
        out.append(f"--- worker {i} ({'alive' if w.alive() else 'exited'}), {len(said)} lines, the last {lines}:")
        out.extend(said[-lines:])
    return "\n".join(out)


def test_a_campaign_survives_service_restarts_and_a_rebalance_and_each_address_gets_one_email(sandbox, worker_factory):
    settings = sandbox.settings.model_copy(update={"email_provider": "sendgrid"})
    ctl = sandbox.control
    base = Settings()
    tag = settings.app_id
    users = [f"{tag}-u{i:05d}" for i in range(WAVE * WAVES)]
    resets = [f"{tag}-r{i}" for i in range(WAVES)]
    spec = CampaignSpec(f"{tag}-c", "weekly_digest", {"test": "faults"}, variables={"headline": "Still here"})
    with psycopg.connect(settings.dsn, autocommit=True) as db:   # not the db fixture: its connection would not survive
        seed_templates(db)
        db.execute("INSERT INTO users (id, email, locale, time_zone, first_name) "
                   "SELECT u, u || '@example.org', 'en', 'UTC', 'Ada' FROM unnest(%s::text[]) AS u", (users + resets,))
        create(db, spec, len(users))
    codec, out = Codec(), Producer(settings)

    def wave(k: int) -> None:
        """One wave of campaign recipients and one password reset, acknowledged by the broker."""
        part = [Recipient(u) for u in users[k * WAVE:(k + 1) * WAVE]]
        assert produce(settings, settings.topic("bulk"), spec, part).produced == WAVE
        uid, eid = resets[k], f"{tag}-reset-{k}"
        ev = {"event_id": eid, "occurred_at": int(time.time() * 1000), "user_id": uid,
              "reset_url": "https://example.test/r/1", "expires_in_minutes": 30}
        out.send_all_blocking([OutRecord(settings.topic("events"), uid.encode(),
                                         codec.encode("PasswordResetRequested", ev), [(TRACE, eid.encode())])])

    first = worker_factory(settings)
    wave(0)   # everything up: the pipeline works
    wait_for(lambda: len(ctl.inbox("email")) >= 1, 120, interval=0.5, message="the first email")

    redis_stack = RedisStack(base)
    assert redis_stack.down() == "stopped", "Redis was not started by `herald stack up`"
    wave(1)   # waits for Redis: recipients, de-duplication, rate limits, circuit state
    time.sleep(3)
    redis_stack.up()

    pg = PostgresStack(base)
    assert pg.down() == "stopped", "PostgreSQL was not started by `herald stack up`"
    wave(2)   # waits for PostgreSQL: recipients, the de-duplication authority, the ledger, statuses
    time.sleep(3)
    pg.up()

    second = worker_factory(settings)
    wave(3)   # the first worker handles it while the second joins: a rebalance mid-wave
    wait_for(lambda: "[^Worker]: Ready" in second.log_text(), 180, interval=0.5, message="the second worker ready")

    wave(4)
    kafka = KafkaStack(base)
    assert kafka.down() == "stopped", "Kafka was not started by `herald stack up`"   # the broker goes away under both workers mid-wave
    third = worker_factory(settings)   # and a worker starts while it is away: it waits instead of exiting
    time.sleep(3)
    kafka.up()

    expected = {f"{u}@example.org" for u in users + resets}

    def all_sent() -> bool:
        got = Counter(m["to"] for m in ctl.inbox("email"))
        return expected <= set(got)

    try:
        wait_for(all_sent, 600, interval=2, message="every address's email at the sandbox")
    except AssertionError as exc:
        missing = sorted(expected - {m["to"] for m in ctl.inbox("email")})
        raise AssertionError(f"{exc}: {len(missing)} missing ({sum('-r' in a for a in missing)} resets), e.g. "
                             f"{missing[:5]}\n{_what_the_workers_said([first, second, third])}") from None
    time.sleep(5)   # a duplicate would arrive now
    got = Counter(m["to"] for m in ctl.inbox("email"))
    twice = {a: n for a, n in got.items() if n > 1}
    assert not twice, f"sent more than once: {sorted(twice.items())[:10]}"
    assert set(got) == expected

    def statuses() -> dict[str, int]:
        return dict(query(settings, "SELECT status, count(*) FROM notifications WHERE user_id LIKE %s GROUP BY 1",
                          f"{tag}-%"))

    wait_for(lambda: statuses() == {"sent": len(expected)}, 180, interval=2, message=f"all sent, got {statuses()}")
    assert first.alive() and second.alive() and third.alive()
    assert "waiting up to" in third.log_text()
    logs = first.log_text() + second.log_text()
    assert "infrastructure error" in logs   # the outages were met, not missed
