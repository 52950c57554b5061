"""Records too big for Kafka, or whose outputs are, and batches retried after an outage, against the real stack.

Each reproduces a way one record used to stop every interactive notification or corrupt its neighbours' outcomes.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from infra.kafka.dead_letters import ERROR_CLASS, STAGE, TRUNCATED, VALUE_BYTES
from infra.kafka.records import InRecord
from infra.settings import Settings
from infra.tools.seed import seed_templates
from infra.topics import deliver_topic
from schemas.codec import Codec
from streams.handlers.route import specs as route_specs
from streams.runtime.context import Context
from tests.integration.test_route_agent import TopicReader, add_user, deliveries, emit, emit_raw, order_placed, statuses

pytestmark = pytest.mark.integration


def reset(user_id: str) -> dict:
    return {"event_id": f"r-{uuid.uuid4().hex[:10]}", "occurred_at": int(time.time() * 1000), "user_id": user_id,
            "reset_url": "https://example.test/reset/abc", "expires_in_minutes": 30}


def dlq_of(records: list[dict], topic_suffix: str = ".dlq") -> list[dict]:
    return [r for r in records if r["topic"].endswith(topic_suffix)]


def test_a_record_just_under_the_broker_limit_is_dead_lettered_and_routing_goes_on(topics, db, worker_factory):
    settings = topics
    seed_templates(db)
    users = [f"u-{uuid.uuid4().hex[:8]}" for _ in range(6)]  # spread over the 3 partitions
    for u in users:
        add_user(db, u, email=f"{u}@example.test")
    junk = bytes(range(256)) * (999_952 // 256)
    emit_raw(settings, junk, key=users[0].encode())
    events = [order_placed(u) for u in users]
    for ev in events:
        emit(settings, "OrderPlaced", ev)
    reader = TopicReader(settings, [settings.topic("dlq"), deliver_topic(settings, "email")])
    worker_factory(settings, agents=["route"])
    recs = reader.wait(lambda rs: dlq_of(rs) and all(deliveries(rs, ev["event_id"]) for ev in events) and rs, timeout=90,
                       message="the junk dead-lettered and every order routed")
    reader.close()
    [dead] = dlq_of(recs)
    assert dead["headers"][STAGE] == b"decode" and dead["headers"][ERROR_CLASS] == b"too_large"
    # the dead letter is cut to fit the broker's limit and says so
    assert dead["headers"][TRUNCATED] == b"1" and int(dead["headers"][VALUE_BYTES]) == len(junk)
    assert junk.startswith(dead["raw"])


def test_a_request_whose_rendering_is_too_big_is_dead_lettered_alone_and_its_batch_is_not_rate_limited(topics, db, worker_factory):
    settings = topics.model_copy(update={"max_event_bytes": 1_000_000, "batch_within": 2.0, "interactive_within": 2.0})
    seed_templates(db)
    uid = f"u-{uuid.uuid4().hex[:8]}"
    add_user(db, uid, email=f"{uid}@example.test")
    huge = {"event_id": f"n-{uuid.uuid4().hex[:8]}", "occurred_at": int(time.time() * 1000), "user_id": uid,
            "template": "weekly_digest", "channels": ["email"], "category": "transactional",
            "variables_json": json.dumps({"headline": "x" * 900_000}), "send_at": None, "ttl_seconds": None}
    resets = [reset(uid) for _ in range(3)]
    emit(settings, "PasswordResetRequested", resets[0])
    emit(settings, "NotificationRequested", huge)
    for r in resets[1:]:
        emit(settings, "PasswordResetRequested", r)
    # password resets (category security) travel the critical lane's deliver topic
    reader = TopicReader(settings, [settings.topic("dlq"), settings.topic("status"), deliver_topic(settings, "email", critical=True)])
    worker_factory(settings, agents=["route"])
    recs = reader.wait(lambda rs: dlq_of(rs) and all(deliveries(rs, r["event_id"]) for r in resets) and rs, timeout=90,
                       message="the huge request dead-lettered and the three resets routed")
    time.sleep(1.0)
    recs = reader.poll(0.5)
    reader.close()
    [dead] = dlq_of(recs)
    assert dead["headers"][STAGE] == b"render" and dead["headers"][ERROR_CLASS] == b"too_large"
    assert b"HERALD_MAX_RECORD_BYTES" in dead["headers"]["herald-dlq-error"]
    for r in resets:
        assert statuses(recs, r["event_id"]) == [("email", "queued", None)]
    assert not [s for s in recs if s["name"] == "StatusChange" and s["value"]["status"] == "rate_limited"]


def test_retrying_a_batch_never_counts_a_rate_limit_twice(topics, db):
    """The same batch handled eleven times (an outage's retries) stays within the 10-a-day cap: every reset is queued."""
    settings: Settings = topics
    seed_templates(db)
    uid = f"u-{uuid.uuid4().hex[:8]}"
    add_user(db, uid, email=f"{uid}@example.test")
    codec = Codec()
    batch = [InRecord(settings.topic("events"), 0, i, uid.encode(), codec.encode("PasswordResetRequested", reset(uid)))
             for i in range(3)]

    async def handle_eleven_times() -> list[list[str]]:
        ctx = await Context.open(settings)
        try:
            spec = next(s for s in route_specs(settings) if s.name == "route")
            handler = await spec.build(ctx)  # type: ignore[misc]
            seen = []
            for _ in range(11):
                out = await handler.handle(batch)
                seen.append(sorted(codec.decode(o.value).record["status"] for o in out if o.topic == settings.topic("status")))
            return seen
        finally:
            await ctx.close()

    seen = asyncio.run(handle_eleven_times())
    assert seen == [["queued"] * 3] * 11
