"""Route guarantees against the real services: de-duplication across a restart with Redis emptied,
opt-out honoured by the very next event, rate limits exact under two racing workers, batched round trips."""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
import redis
import yaml
from confluent_kafka.admin import AdminClient

from infra.kafka.producer import Producer
from infra.kafka.records import InRecord, OutRecord
from infra.tools.seed import seed_templates
from infra.topics import deliver_topic
from schemas.codec import Codec
from streams.runtime.context import Context
from streams.stores.recipients import invalidate_recipient
from tests.integration.test_route_agent import TopicReader, add_user, deliveries, emit, order_placed, statuses
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration


def drop_test_keys(settings) -> int:
    """Empty Redis of this test's keys only (its own prefix), as a flush would."""
    r = redis.Redis.from_url(settings.redis_dsn)
    keys = list(r.scan_iter(match=f"{settings.redis_prefix}:*", count=1000))
    if keys:
        r.delete(*keys)
    return len(keys)


def test_duplicate_event_notified_once_across_restart_with_redis_emptied(topics, db, worker_factory):
    settings = topics
    seed_templates(db)
    uid = f"u-{uuid.uuid4().hex[:8]}"
    add_user(db, uid)
    ev = order_placed(uid)
    emit(settings, "OrderPlaced", ev)
    emit(settings, "OrderPlaced", ev)  # delivered twice upstream
    reader = TopicReader(settings, [deliver_topic(settings, "email")])
    w = worker_factory(settings, agents=["route"])
    reader.wait(lambda rs: deliveries(rs, ev["event_id"]), message="first delivery")
    w.stop()
    assert drop_test_keys(settings) > 0
    emit(settings, "OrderPlaced", ev)  # and once more after the restart
    marker = order_placed(uid)
    emit(settings, "OrderPlaced", marker)
    worker_factory(settings, agents=["route"])
    recs = reader.wait(lambda rs: deliveries(rs, marker["event_id"]) and rs, message="the marker event after the duplicate")
    recs = reader.poll(1.0)
    reader.close()
    assert len(deliveries(recs, ev["event_id"])) == 1
    # one claim per channel, held by the first copy's Kafka position
    claims = db.execute("SELECT channel, origin FROM dedup WHERE event_id = %s ORDER BY channel", (ev["event_id"],)).fetchall()
    assert [c for c, _ in claims] == ["email", "push", "sms"]
    assert len({o for _, o in claims}) == 1 and claims[0][1].startswith(settings.topic("events")) and claims[0][1].endswith(":0")


def test_opt_out_is_honoured_by_the_very_next_event(topics, db, worker_factory):
    settings = topics
    seed_templates(db)
    uid = f"u-{uuid.uuid4().hex[:8]}"
    add_user(db, uid)
    first = order_placed(uid)
    emit(settings, "OrderPlaced", first)
    reader = TopicReader(settings, [settings.topic("status")])
    worker_factory(settings, agents=["route"])
    reader.wait(lambda rs: len(statuses(rs, first["event_id"])) == 3, message="first event queued (recipient now cached)")
    assert redis.Redis.from_url(settings.redis_dsn).exists(settings.rkey("recipient", uid))
    # what the preferences API does: change, then invalidate
    db.execute("INSERT INTO preferences (user_id, channels) VALUES (%s, '{\"email\": false}')", (uid,))

    async def invalidate() -> None:
        import redis.asyncio as aioredis
        r = aioredis.from_url(settings.redis_dsn)
        await invalidate_recipient(r, settings, uid)
        await r.aclose()

    asyncio.run(invalidate())
    second = order_placed(uid)
    emit(settings, "OrderPlaced", second)
    recs = reader.wait(lambda rs: len(statuses(rs, second["event_id"])) == 3 and rs, message="second event's statuses")
    reader.close()
    assert statuses(recs, first["event_id"]) == [("email", "queued", None), ("push", "skipped", "no_address"),
                                                 ("sms", "skipped", "no_address")]
    assert statuses(recs, second["event_id"]) == [("email", "suppressed", "preference"), ("push", "skipped", "no_address"),
                                                  ("sms", "skipped", "no_address")]


def test_two_racing_workers_never_exceed_a_rate_limit(topics, db, worker_factory, tmp_path):
    settings = topics
    seed_templates(db)
    uid = f"u-{uuid.uuid4().hex[:8]}"
    add_user(db, uid)
    routes = yaml.safe_load(Path("infra/config/routes.yaml").read_text())
    routes["rate_limits"] = [{"name": "email_per_user_day", "key": ["user"], "channels": ["email"], "limit": 7, "window_seconds": 86400}]
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(yaml.safe_dump(routes))
    s = settings.model_copy(update={"routes_file": routes_file, "batch_size": 5})
    worker_factory(s, agents=["route"])
    worker_factory(s, agents=["route"])
    admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})

    def both_assigned() -> bool:
        g = admin.describe_consumer_groups([s.app_id])[s.app_id].result(10)
        return len(g.members) == 2 and all(m.assignment.topic_partitions for m in g.members) and str(g.state).endswith("STABLE")

    wait_for(both_assigned, 90, interval=0.5, message="two workers sharing the events topic")
    # one user's events under different keys, so both workers (on different partitions) count against one limit
    codec, out = Codec(), Producer(s)
    events = [order_placed(uid) for _ in range(40)]
    out.send_all_blocking([OutRecord(s.topic("events"), f"k{i}".encode(), codec.encode("OrderPlaced", e)) for i, e in enumerate(events)])
    reader = TopicReader(s, [s.topic("status")])
    ids = {e["event_id"] for e in events}

    def email_statuses(rs):
        got = [r["value"] for r in rs if r["name"] == "StatusChange" and r["value"]["event_id"] in ids and r["value"]["channel"] == "email"]
        return got if len(got) == 40 else None

    got = reader.wait(email_statuses, 90, message="40 email statuses")
    reader.close()
    counts: dict[tuple, int] = {}
    for g in got:
        counts[(g["status"], g["reason"])] = counts.get((g["status"], g["reason"]), 0) + 1
    assert counts == {("queued", None): 7, ("rate_limited", "email_per_user_day"): 33}


def test_round_trips_per_batch_do_not_grow_with_the_batch(topics, db):
    """The handler in-process, with counting wrappers around its Redis pipelines and PostgreSQL statements."""
    from streams.handlers.route import RouteHandler
    from streams.routes import load_routes
    from streams.stores.templates import TemplateStore

    settings = topics
    seed_templates(db)
    from infra.tools.seed import seed_demo_users
    users = seed_demo_users(db, 300, prefix=f"b{uuid.uuid4().hex[:6]}")
    codec = Codec()

    def batch(n: int, start: int) -> list[InRecord]:
        return [InRecord(settings.topic("events"), 0, start + i, users[i].encode(),
                         codec.encode("OrderPlaced", order_placed(users[i]))) for i in range(n)]

    async def run() -> list[tuple[int, int, int]]:
        ctx = await Context.open(settings)
        handler = RouteHandler(ctx, load_routes(), TemplateStore(60))
        counts = {"redis": 0, "pg": 0}
        real_pipeline, real_connection = ctx.redis.pipeline, ctx.db.connection

        def pipeline(*a, **kw):
            p = real_pipeline(*a, **kw)
            real_execute = p.execute

            async def execute(*ea, **ekw):
                counts["redis"] += 1
                return await real_execute(*ea, **ekw)
            p.execute = execute
            return p

        class CountingConn:
            def __init__(self, cm):
                self.cm = cm

            async def __aenter__(self):
                conn = await self.cm.__aenter__()
                if getattr(conn, "_counted", False):  # pooled connections come back: wrap each once
                    return conn
                conn._counted = True
                real_exec = conn.execute

                async def execute(*a, **kw):
                    counts["pg"] += 1
                    return await real_exec(*a, **kw)
                conn.execute = execute
                return conn

            async def __aexit__(self, *exc):
                return await self.cm.__aexit__(*exc)

        ctx.redis.pipeline = pipeline
        ctx.db.connection = lambda *a, **kw: CountingConn(real_connection(*a, **kw))
        result = []
        try:
            for n, start in ((1, 0), (300, 1000)):
                counts.update(redis=0, pg=0)
                out = await handler.handle(batch(n, start))
                result.append((n, counts["redis"], counts["pg"], len(out)))
        finally:
            await ctx.close()
        return result

    (_n1, r1, p1, o1), (_n2, r2, p2, o2) = asyncio.run(run())
    assert o2 > o1 > 0  # the batches did produce deliveries and statuses
    assert (r1, r2) == (2, 2)              # recipients+dedup pipeline, cache fill+rate-limit pipeline
    # misses, dedup authority (+ templates and the cancellation view's first read once; cached for the second batch)
    assert p1 == 4 and p2 == 2


def test_a_stale_read_is_not_written_back_to_the_cache_after_an_invalidation(topics, db):
    """The cache-aside race: read the old row, the change commits and invalidates, then the fill must not land."""
    import redis.asyncio as aioredis

    from streams.stores.recipients import load_recipients, queue_fill, recipient_key

    settings = topics
    uid, other = f"u-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"
    add_user(db, uid)
    add_user(db, other)

    async def run() -> tuple[bool, bool]:
        from psycopg_pool import AsyncConnectionPool

        pool = AsyncConnectionPool(settings.dsn, min_size=1, max_size=2, open=False, kwargs={"autocommit": True})
        await pool.open()
        r = aioredis.from_url(settings.redis_dsn)
        try:
            stale = await load_recipients(pool, [uid, other])        # a worker reads
            db.execute("INSERT INTO preferences (user_id, muted) VALUES (%s, true)", (uid,))
            await invalidate_recipient(r, settings, uid)                # the API commits and invalidates
            pipe = r.pipeline(transaction=False)
            queue_fill(pipe, settings, list(stale.values()))            # the worker's fill comes late
            await pipe.execute()
            return bool(await r.exists(recipient_key(settings, uid))), bool(await r.exists(recipient_key(settings, other)))
        finally:
            await r.aclose()
            await pool.close()

    assert asyncio.run(run()) == (False, True)
