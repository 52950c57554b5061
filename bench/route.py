"""Route-stage throughput for a plain email route, beside the raw Kafka consume→produce rate, in one run.

    python bench/route.py [--events 20000] [--batch 1000] [--users 2000] [--quick]

Measures, on the real local stack (a private database, Redis prefix and topics,
all removed afterwards):
  1. pure:    the stage functions alone (decode, route, decide, render, encode
               the Delivery and the status), no I/O;
  2. handler: RouteHandler.handle per batch: the same functions plus the batch's
               Redis pipelines (recipient cache, de-dup SET NX, rate-limit script)
               and PostgreSQL statements (de-dup authority, misses, templates);
  3. kafka:   confluent-kafka consume → produce of the same records (the floor
               any stage sits on), flushed.
Prints events/s for each and the ratios. Not a pass/fail test.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from rawkafka import pass_through

from infra.db import migrate
from infra.kafka.records import InRecord
from infra.settings import Settings
from infra.tools.seed import seed_demo_users, seed_templates
from schemas.codec import Codec
from streams.routes import RateRule, load_routes
from streams.runtime.context import Context
from streams.stages.route.decide import channel_decision, delivery_record, push_data, template_context
from streams.stages.route.intent import intent_for
from streams.stages.route.limits import counters
from streams.stages.route.render import render
from streams.stages.route.timing import is_expired, is_for_later
from streams.stages.status_change import status_record
from streams.stores.templates import TemplateStore


def bench_config():
    cfg = load_routes()
    routes = dict(cfg.routes)
    routes["OrderPlaced"] = dataclasses.replace(routes["OrderPlaced"], channels=("email",))
    # the rules run (one script per batch) but never deny, so every event renders
    rules = tuple(RateRule(r.name, r.key, 10**9, r.window_seconds, r.channels, r.categories) for r in cfg.rate_limits)
    return dataclasses.replace(cfg, routes=routes, rate_limits=rules)


def make_events(codec: Codec, users: list[str], n: int, tag: str) -> list[bytes]:
    now = int(time.time() * 1000)
    out = []
    for i in range(n):
        out.append(codec.encode("OrderPlaced", {
            "event_id": f"{tag}-{i}", "occurred_at": now, "user_id": users[i % len(users)], "order_id": f"A-{i}",
            "currency": "EUR", "total_cents": 4550,
            "items": [{"sku": "mug", "name": "Mug", "quantity": 2, "unit_price_cents": 1275},
                      {"sku": "tee", "name": "T-Shirt", "quantity": 1, "unit_price_cents": 2000}],
            "shipping_address": None,
        }))
    return out


def bench_pure(cfg, codec: Codec, store: TemplateStore, recipients: dict, values: list[bytes]) -> float:
    now = int(time.time() * 1000)
    t0 = time.perf_counter()
    for v in values:
        it = intent_for(codec.decode(v), cfg)
        if is_expired(it, now) or is_for_later(it, now):
            continue
        r = recipients[it.user_id]
        for ch in it.channels:
            addrs = channel_decision(it, ch, r)
            counters(cfg.rate_limits, "b:rl", user=it.user_id, channel=ch, category=it.category, event_type=it.event_type, now_ms=now)
            tmpl = store.pick(it.template, ch, r.locale)
            out = render(tmpl, ch, template_context(it, r), push_data(it))
            for a in addrs:
                codec.encode("Delivery", delivery_record(it, ch, a, tmpl, out).to_avro())
                status_record(codec, "b.status", notification_id=it.event_id, event_id=it.event_id, user_id=it.user_id,
                              status="queued", channel=ch)
    return time.perf_counter() - t0


def breakdown(cfg, codec: Codec, store: TemplateStore, recipients: dict, values: list[bytes]) -> dict[str, float]:
    """µs per event of the main pure costs, each timed on its own."""
    decoded = [codec.decode(v) for v in values]
    intents = [intent_for(d, cfg) for d in decoded]
    ctxs = [(it, recipients[it.user_id]) for it in intents]
    tmpls = [store.pick(it.template, "email", r.locale) for it, r in ctxs]
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    for v in values:
        codec.decode(v)
    out["decode"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rendered = [render(t, "email", template_context(it, r)) for t, (it, r) in zip(tmpls, ctxs, strict=True)]
    out["render (subject+text+html)"] = time.perf_counter() - t0
    recs = [delivery_record(it, "email", r.email, t, o).to_avro() for t, (it, r), o in zip(tmpls, ctxs, rendered, strict=True)]
    t0 = time.perf_counter()
    for d in recs:
        codec.encode("Delivery", d)
    out["encode Delivery"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for it in intents:
        status_record(codec, "b.status", notification_id=it.event_id, event_id=it.event_id, user_id=it.user_id, status="queued")
    out["encode StatusChange"] = time.perf_counter() - t0
    return {k: v / len(values) * 1e6 for k, v in out.items()}


async def bench_handler(settings: Settings, cfg, values: list[bytes], batch: int) -> tuple[float, int, TemplateStore, dict]:
    from streams.handlers.route import RouteHandler
    from streams.stores.recipients import load_recipients

    ctx = await Context.open(settings)
    try:
        store = TemplateStore(cfg.template_refresh_seconds)
        handler = RouteHandler(ctx, cfg, store)
        topic = settings.topic("events")
        recs = [InRecord(topic, 0, i, None, v) for i, v in enumerate(values)]
        # warm-up batch: fills the recipient cache and compiles templates
        await handler.handle(recs[:batch])
        produced = 0
        t0 = time.perf_counter()
        for i in range(batch, len(recs), batch):
            produced += len(await handler.handle(recs[i:i + batch]))
        elapsed = time.perf_counter() - t0
        users = sorted({intent_for(ctx.codec.decode(v), cfg).user_id for v in values[:batch]})
        recipients = await load_recipients(ctx.db, users)
        return elapsed, produced, store, recipients
    finally:
        await ctx.close()


def bench_kafka(settings: Settings, values: list[bytes]) -> float:
    src, dst = settings.topic("bench-in"), settings.topic("bench-out")
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in (src, dst)]).values():
        f.result(30)
    p = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5, "batch.size": 1_000_000,
                  "compression.type": "lz4", "queue.buffering.max.messages": 1_000_000})
    for v in values:
        while True:
            try:
                p.produce(src, v)
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)
    raw = pass_through(settings.kafka_bootstrap, src, dst, len(values))
    admin.delete_topics([src, dst])
    if raw.records < len(values):
        raise SystemExit(f"kafka: consumed only {raw.records} of {len(values)} records")
    return raw.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--quick", action="store_true", help="5000 events (a fast check while developing)")
    a = ap.parse_args()
    if a.quick:
        a.events = 5000
    base = Settings()
    tag = f"bench{uuid.uuid4().hex[:8]}"
    dbname = f"herald_{tag}"
    admin_dsn = base.dsn.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    settings = Settings(database_url=base.dsn.rsplit("/", 1)[0] + f"/{dbname}", topic_prefix=tag, redis_prefix=tag, app_id=tag)
    try:
        migrate(settings)
        with psycopg.connect(settings.dsn, autocommit=True) as conn:
            seed_templates(conn)
            users = seed_demo_users(conn, a.users, prefix=tag, devices=False)
        codec = Codec()
        cfg = bench_config()
        values = make_events(codec, users, a.events + a.batch, tag)

        h_elapsed, produced, store, recipients = asyncio.run(bench_handler(settings, cfg, values, a.batch))
        handled = len(values) - a.batch
        pure_values = [v for v in values[:a.batch] if intent_for(codec.decode(v), cfg).user_id in recipients]
        pure_elapsed = bench_pure(cfg, codec, store, recipients, pure_values * max(1, handled // max(1, len(pure_values))))
        pure_n = len(pure_values) * max(1, handled // max(1, len(pure_values)))
        parts = breakdown(cfg, codec, store, recipients, pure_values)
        k_elapsed = bench_kafka(settings, values[:handled])
    finally:
        r = redis.Redis.from_url(base.redis_dsn)
        keys = list(r.scan_iter(match=f"{tag}:*", count=5000))
        for i in range(0, len(keys), 5000):
            r.delete(*keys[i:i + 5000])
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

    pure_rate, handler_rate, kafka_rate = pure_n / pure_elapsed, handled / h_elapsed, handled / k_elapsed
    print(f"route bench: {handled} OrderPlaced → email events after a warm-up batch, batches of {a.batch}, {a.users} users")
    print(f"  pure stage functions      {pure_rate:>10,.0f} events/s  ({1e6 / pure_rate:.1f} µs/event)")
    print("    of which: " + ", ".join(f"{k} {v:.1f} µs" for k, v in parts.items()))
    print(f"  route handler (Redis+PG)  {handler_rate:>10,.0f} events/s  ({1e6 / handler_rate:.1f} µs/event, "
          f"{produced} records out)")
    print(f"  raw Kafka consume→produce {kafka_rate:>10,.0f} events/s")
    print(f"  handler / kafka = {handler_rate / kafka_rate:.2f}   handler / pure = {handler_rate / pure_rate:.2f}   "
          f"target 30,000 events/s: {handler_rate / 30_000:.0%} of it")


if __name__ == "__main__":
    main()
