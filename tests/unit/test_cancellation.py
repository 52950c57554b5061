"""Cancellation keys and notification cancels over the route and deliver handlers' in-memory twins.

The real path (API, PostgreSQL, Kafka, workers, scheduler, sandbox) is tests/e2e/test_cancellation.py.
"""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from schemas.records import Delivery
from schemas.vocabulary import Channel, LedgerStatus, Status
from sinks.memory import MemorySink
from streams.stages.route.recipient import Recipient
from streams.stores.cancellations import (
    REASON_BY_ID,
    REASON_BY_KEY,
    CancelKind,
    CancellationView,
    MemoryCancellationRows,
)
from tests.unit.test_deliver_handler import MemoryDeliverEnv, record as deliver_record, statuses as deliver_statuses, typed
from tests.unit.test_route_handler import MemoryRouteEnv, deliveries, now_ms, record, request, statuses


def _route_rows(env: MemoryRouteEnv) -> MemoryCancellationRows:
    assert env.stores.cancellations is not None
    return env.stores.cancellations.rows  # type: ignore[return-value]


def test_a_key_cancels_what_occurred_before_it_and_not_what_comes_after():
    rows = MemoryCancellationRows()
    view = CancellationView(rows, ttl=0)
    at = datetime.now(UTC)
    rows.cancel(CancelKind.KEY, "cart:1", at)
    rows.cancel(CancelKind.NOTIFICATION, "n-9")
    asyncio.run(view.refresh())
    ms = int(at.timestamp() * 1000)
    assert view.reason("n-1", "cart:1", ms - 1) == REASON_BY_KEY
    assert view.reason("n-1", "cart:1", ms) == REASON_BY_KEY
    assert view.reason("n-2", "cart:1", ms + 1) is None          # a later event with the key goes on
    assert view.reason("n-3", "cart:2", ms - 1) is None
    assert view.reason("n-9", None, ms + 10_000) == REASON_BY_ID


def test_the_view_is_read_at_most_once_per_ttl_and_only_newer_rows_after():
    calls: list[datetime] = []

    class Counting(MemoryCancellationRows):
        async def since(self, after: datetime):
            calls.append(after)
            return await super().since(after)

    rows = Counting()
    view = CancellationView(rows, ttl=1.0)
    asyncio.run(view.refresh(now=100.0))
    rows.cancel(CancelKind.KEY, "k", datetime.now(UTC))
    asyncio.run(view.refresh(now=100.5))              # trusted: not read again
    assert len(calls) == 1 and view.reason("x", "k", 0) is None
    asyncio.run(view.refresh(now=101.0))
    assert len(calls) == 2 and view.reason("x", "k", 0) == REASON_BY_KEY
    asyncio.run(view.refresh(now=102.0))
    assert calls[2] > calls[0]                         # from the newest seen (less an overlap), not from the start


def test_route_ends_a_canceled_keyed_event_canceled_and_a_later_one_with_the_key_goes_on():
    env = MemoryRouteEnv()

    async def scenario() -> None:
        uid = env.uid()
        await env.add_user(Recipient(id=uid, email=f"{uid}@example.test"))
        before = request(uid, "weekly_digest", ["email"], {"headline": "News"},
                         cancellation_key="cart:7", occurred_at=now_ms() - 5_000)
        _route_rows(env).cancel(CancelKind.KEY, "cart:7")
        after = request(uid, "weekly_digest", ["email"], {"headline": "News"},
                        cancellation_key="cart:7", occurred_at=now_ms() + 5_000)
        out = await env.handler().handle([record(env, "NotificationRequested", before),
                                          record(env, "NotificationRequested", after)])
        assert statuses(env, out, before["event_id"]) == [("email", "canceled", REASON_BY_KEY)]
        assert deliveries(env, out, before["event_id"]) == []
        sent = deliveries(env, out, after["event_id"])
        assert len(sent) == 1 and sent[0]["cancellation_key"] == "cart:7"   # the deliver stage can still refuse it

    asyncio.run(scenario())


def test_a_scheduled_event_keeps_its_key_on_its_outbox_row():
    env = MemoryRouteEnv()

    async def scenario() -> None:
        uid = env.uid()
        await env.add_user(Recipient(id=uid, email=f"{uid}@example.test"))
        later = int((datetime.now(UTC) + timedelta(hours=1)).timestamp() * 1000)
        event = request(uid, "weekly_digest", ["email"], {"headline": "News"}, cancellation_key="trial:9", send_at=later)
        await env.handler().handle([record(env, "NotificationRequested", event)])
        rows = list(env.stores.scheduled.rows.values())  # type: ignore[attr-defined]
        assert [(r.kind, r.cancellation_key) for r in rows] == [("send_at", "trial:9")]

    asyncio.run(scenario())


def test_deliver_refuses_a_canceled_notification_and_a_canceled_key_even_from_a_retry_tier():
    env = MemoryDeliverEnv()

    async def scenario() -> None:
        sink = MemorySink()
        handler = env.handler(sink)
        assert handler.stores.cancellations is not None
        rows: MemoryCancellationRows = handler.stores.cancellations.rows  # type: ignore[assignment]
        by_key: Delivery = typed(cancellation_key="cart:3", attempt=1)    # back from a retry tier
        by_id = typed()
        other = typed(cancellation_key="cart:4")
        rows.cancel(CancelKind.KEY, "cart:3")
        rows.cancel(CancelKind.NOTIFICATION, by_id.notification_id)
        out = await handler.handle([deliver_record(env, d) for d in (by_key, by_id, other)])
        assert [d.delivery_id for call in sink.calls for d in call] == [other.delivery_id]
        said = {did: status for did, status, _ in deliver_statuses(env, out)}
        assert said == {by_key.delivery_id: Status.CANCELED, by_id.delivery_id: Status.CANCELED,
                        other.delivery_id: Status.SENT}

    asyncio.run(scenario())


def test_a_cancel_between_two_provider_calls_stops_the_second():
    env = MemoryDeliverEnv()

    async def scenario() -> None:
        ds = [typed(Channel.EMAIL, cancellation_key="digest:1") for _ in range(4)]
        handler = env.handler(MemorySink(max_batch=2))
        assert handler.stores.cancellations is not None
        rows: MemoryCancellationRows = handler.stores.cancellations.rows  # type: ignore[assignment]

        class CancelAfterFirstCall(MemorySink):
            async def send_batch(self, deliveries: list[Delivery]):   # type: ignore[override]
                rows.cancel(CancelKind.KEY, "digest:1", datetime.now(UTC) + timedelta(seconds=1))
                return await super().send_batch(deliveries)

        sink = CancelAfterFirstCall(max_batch=2)
        handler.sink = sink
        await handler.handle([deliver_record(env, d) for d in ds])
        assert [[d.delivery_id for d in call] for call in sink.calls] == [[ds[0].delivery_id, ds[1].delivery_id]]
        assert await env.ledger(ds[2].delivery_id) == (LedgerStatus.FAILED, 1)

    asyncio.run(scenario())


def test_a_canceled_notification_ends_its_waiting_fallback_canceled_and_sends_nothing():
    env = MemoryRouteEnv()

    async def scenario() -> None:
        from dataclasses import replace

        from streams.routes import Fallback
        from tests.unit.test_route_handler import CFG

        request_route = replace(CFG.routes["NotificationRequested"], fallback=Fallback(600, "delivered", "sms"))
        handler = env.handler(replace(CFG, routes={**CFG.routes, "NotificationRequested": request_route}))
        uid = env.uid()
        await env.add_user(Recipient(id=uid, email=f"{uid}@example.test", phone="+4366400002"))
        event = request(uid, "weekly_digest", ["email"], {"headline": "News"}, cancellation_key="cart:8")
        await handler.handle([record(env, "NotificationRequested", event)])
        rows = list(env.stores.scheduled.rows.values())  # type: ignore[attr-defined]
        assert [(r.kind, r.cancellation_key) for r in rows] == [("fallback", "cart:8")]   # a key cancel marks it too
        _route_rows(env).cancel(CancelKind.NOTIFICATION, event["event_id"])
        out = await handler.handle([await env.published(event["event_id"], "fallback")])
        assert statuses(env, out, event["event_id"]) == [("sms", "canceled", REASON_BY_ID)]
        assert deliveries(env, out, event["event_id"]) == []

    asyncio.run(scenario())


def test_a_canceled_event_collecting_in_a_digest_is_left_out_of_it():
    env = MemoryRouteEnv()

    async def scenario() -> None:
        from tests.unit.test_route_handler import CFG, DIGEST_TEMPLATE, followed, followers_digest

        await env.add_template(DIGEST_TEMPLATE)
        handler = env.handler(followers_digest(CFG, listed=10))
        uid = env.uid()
        await env.add_user(Recipient(id=uid, email=f"{uid}@example.test"))
        kept, dropped = followed(uid, "kept", now_ms()), followed(uid, "dropped", now_ms() + 1)
        await handler.handle([record(env, "UserFollowed", ev) for ev in (kept, dropped)])
        _route_rows(env).cancel(CancelKind.NOTIFICATION, dropped["event_id"])
        [digest_id] = await env.scheduled_kind("digest")
        out = await handler.handle([await env.published(digest_id, "digest")])
        [sent] = deliveries(env, out, digest_id)
        assert (sent["subject"], sent["text"]) == ("1 new followers", "kept;+0")
        assert statuses(env, out, dropped["event_id"]) == [(None, "canceled", REASON_BY_ID)]

    asyncio.run(scenario())


def test_a_keyed_delivery_on_the_bulk_lane_travels_alone_with_its_key():
    env = MemoryRouteEnv()

    async def scenario() -> None:
        uid = env.uid()
        await env.add_user(Recipient(id=uid, email=f"{uid}@example.test"))
        keyed = request(uid, "weekly_digest", ["email"], {"headline": "News"}, cancellation_key="promo:1")
        out = await env.handler().handle([record(env, "NotificationRequested", keyed, topic="bulk")])
        names = [env.codec.decode(o.value).name for o in out if o.topic == env.settings.topic("deliver.email.bulk")]
        assert names == ["Delivery"]
        assert deliveries(env, out, keyed["event_id"])[0]["cancellation_key"] == "promo:1"

    asyncio.run(scenario())


def test_the_view_forgets_cancels_older_than_the_retention_window():
    rows = MemoryCancellationRows()
    view = CancellationView(rows, ttl=0, keep_days=30)
    old = datetime.now(UTC) - timedelta(days=31)
    rows.cancel(CancelKind.KEY, "old", old)
    rows.cancel(CancelKind.NOTIFICATION, "n-old", old)
    rows.cancel(CancelKind.KEY, "new")
    asyncio.run(view.refresh())
    assert view.reason("x", "old", 0) is None and view.reason("n-old", None, 0) is None
    assert view.reason("x", "new", 0) == REASON_BY_KEY
