"""The route handler's choreography over the in-memory twins of its stores: no network, milliseconds.

The same scenarios run over the real stores (Redis, PostgreSQL) in
tests/integration/test_route_stores.py, which imports them and overrides the
``route_stores`` fixture: a twin that drifts from its store fails there.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import UTC, datetime, time as clock, timedelta
from typing import Any

import pytest

from infra.kafka.dead_letters import ERROR_CLASS, ERROR_TEXT, STAGE
from infra.kafka.records import InRecord, OutRecord
from infra.settings import Settings
from infra.tools.seed import SEED_TEMPLATES
from schemas.codec import Codec
from schemas.records import StatusChange, chunk_deliveries
from schemas.vocabulary import Channel, Status
from streams.handlers.route import RouteHandler, RouteStores
from streams.metrics import Metrics
from streams.routes import Digest, Fallback, RateRule, RouteConfig, load_routes
from streams.runtime.context import Context
from streams.stages.route.digest import DIGEST_WINDOW
from streams.stages.route.fallback import FALLBACK, FALLBACK_UNLESS
from streams.stages.route.recipient import Recipient
from streams.stores.templates import TemplateStore
from streams.templates import TemplateSource

CFG = load_routes()


class RouteEnv:
    """What a scenario needs from its stores; ``MemoryRouteEnv`` here, ``RealRouteEnv`` in the integration file."""

    settings: Settings
    codec: Codec
    stores: RouteStores

    def run(self, scenario: Callable[[RouteEnv], Coroutine[Any, Any, None]]) -> None:
        raise NotImplementedError

    async def add_user(self, recipient: Recipient) -> None:
        raise NotImplementedError

    async def change_user(self, recipient: Recipient) -> None:
        """What the preferences API does: write the change, then invalidate the cached recipient."""
        raise NotImplementedError

    async def cancel_campaign(self, campaign_id: str) -> None:
        """What ``herald campaign cancel`` writes."""
        raise NotImplementedError

    async def add_template(self, src: TemplateSource) -> None:
        """A new active version of (code, channel, locale)."""
        raise NotImplementedError

    async def scheduled(self, notification_id: str) -> list[tuple[str, str, str]]:
        """(kind, topic, dedup_key) of the scheduled rows of a notification, sorted."""
        raise NotImplementedError

    async def empty_fast_claims(self) -> None:
        """Redis loses the de-duplication keys (a flush, a failover)."""
        raise NotImplementedError

    async def published(self, notification_id: str, kind: str) -> InRecord:
        """The scheduled row of that kind as the scheduler publishes it when due (a new Kafka position)."""
        raise NotImplementedError

    async def receipt(self, notification_id: str, channel: Channel, status: Status) -> None:
        """What the status agent writes for a provider's receipt: a history row of the notification."""
        raise NotImplementedError

    async def scheduled_kind(self, kind: str) -> list[str]:
        """The notification ids of this test's scheduled rows of that kind, sorted."""
        raise NotImplementedError

    def handler(self, cfg: RouteConfig = CFG, settings: Settings | None = None, refresh_seconds: float = 0) -> RouteHandler:
        """A handler over ``stores``; templates are re-read every batch unless ``refresh_seconds`` says otherwise."""
        raise NotImplementedError

    def uid(self) -> str:
        return f"u-{uuid.uuid4().hex[:8]}"


class MemoryRouteEnv(RouteEnv):
    def __init__(self) -> None:
        self.settings = Settings()
        self.codec = Codec()
        self.stores = RouteStores.memory(templates=SEED_TEMPLATES)

    def run(self, scenario: Callable[[RouteEnv], Coroutine[Any, Any, None]]) -> None:
        asyncio.run(scenario(self))

    async def add_user(self, recipient: Recipient) -> None:
        self.stores.recipients.add(recipient)  # type: ignore[attr-defined]

    async def cancel_campaign(self, campaign_id: str) -> None:
        assert self.stores.cancels is not None
        self.stores.cancels.rows.cancel(campaign_id)  # type: ignore[attr-defined]

    async def change_user(self, recipient: Recipient) -> None:
        self.stores.recipients.add(recipient)  # type: ignore[attr-defined]
        await self.stores.recipients.invalidate(recipient.id)

    async def add_template(self, src: TemplateSource) -> None:
        self.stores.template_rows.add(src)  # type: ignore[attr-defined]

    async def scheduled(self, notification_id: str) -> list[tuple[str, str, str]]:
        rows = self.stores.scheduled.rows.values()  # type: ignore[attr-defined]
        return sorted((r.kind, r.topic, r.dedup_key) for r in rows if r.notification_id == notification_id)

    async def empty_fast_claims(self) -> None:
        self.stores.dedup.fast.clear()  # type: ignore[attr-defined]

    async def published(self, notification_id: str, kind: str) -> InRecord:
        rows = self.stores.scheduled.rows.values()  # type: ignore[attr-defined]
        [row] = [r for r in rows if r.notification_id == notification_id and r.kind == kind]
        return InRecord(row.topic, 0, next(_offsets), row.key, row.value,
                        [(k, v.encode()) for k, v in row.headers.items()])

    async def scheduled_kind(self, kind: str) -> list[str]:
        rows = self.stores.scheduled.rows.values()  # type: ignore[attr-defined]
        return sorted(r.notification_id for r in rows if r.kind == kind)

    async def receipt(self, notification_id: str, channel: Channel, status: Status) -> None:
        assert self.stores.statuses is not None
        self.stores.statuses.history.append(StatusChange(  # type: ignore[attr-defined]
            notification_id, notification_id, "u", status, now_ms(), channel=channel))

    def handler(self, cfg: RouteConfig = CFG, settings: Settings | None = None, refresh_seconds: float = 0) -> RouteHandler:
        # the handler reaches Redis and PostgreSQL through its stores only: the context needs neither
        ctx = Context(settings=settings or self.settings, codec=self.codec, output=None, redis=None, db=None,  # type: ignore[arg-type]
                      metrics=Metrics())
        return RouteHandler(ctx, cfg, TemplateStore(refresh_seconds), stores=self.stores)


@pytest.fixture(params=["memory"])
def route_stores(request) -> RouteEnv:
    return MemoryRouteEnv()


# --- records in, records out ------------------------------------------------------------

_offsets = iter(range(10**9))


def record(env: RouteEnv, name: str, value: dict[str, Any], offset: int | None = None, topic: str = "events") -> InRecord:
    """An event as the handler reads it; every call is a new Kafka position unless ``offset`` says otherwise."""
    return InRecord(env.settings.topic(topic), 0, next(_offsets) if offset is None else offset,
                    value["user_id"].encode(), env.codec.encode(name, value))


def now_ms() -> int:
    return int(time.time() * 1000)


def order_placed(user_id: str, **kw: Any) -> dict[str, Any]:
    return {"event_id": f"e-{uuid.uuid4().hex[:12]}", "occurred_at": now_ms(), "user_id": user_id, "order_id": "A-1",
            "currency": "EUR", "total_cents": 4550, "shipping_address": None,
            "items": [{"sku": "mug", "name": "Mug", "quantity": 2, "unit_price_cents": 1275}], **kw}


def password_reset(user_id: str) -> dict[str, Any]:
    return {"event_id": f"r-{uuid.uuid4().hex[:12]}", "occurred_at": now_ms(), "user_id": user_id,
            "reset_url": "https://example.test/reset", "expires_in_minutes": 30}


def request(user_id: str, template: str, channels: list[str], variables: dict[str, Any] | None = None,
            inline: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return {"event_id": f"n-{uuid.uuid4().hex[:12]}", "occurred_at": now_ms(), "user_id": user_id, "template": template,
            "channels": channels, "category": "transactional", "variables_json": json.dumps(variables or {}),
            "send_at": None, "ttl_seconds": None, "recipient": inline, **kw}


def decoded(env: RouteEnv, out: list[OutRecord], name: str) -> list[dict[str, Any]]:
    found = []
    for o in out:
        if o.topic == env.settings.topic("dlq"):
            continue
        d = env.codec.decode(o.value)
        if d.name == name:
            found.append(d.record)
        elif d.name == "DeliveryChunk" and name == "Delivery":   # the bulk lane's deliveries travel packed
            found.extend(delivery.to_avro() for delivery in chunk_deliveries(d.record))
    return found


def statuses(env: RouteEnv, out: list[OutRecord], event_id: str) -> list[tuple[str | None, str, str | None]]:
    return sorted((s["channel"], s["status"], s["reason"]) for s in decoded(env, out, "StatusChange") if s["event_id"] == event_id)


def deliveries(env: RouteEnv, out: list[OutRecord], event_id: str) -> list[dict[str, Any]]:
    return [d for d in decoded(env, out, "Delivery") if d["event_id"] == event_id]


def dead(env: RouteEnv, out: list[OutRecord]) -> list[OutRecord]:
    return [o for o in out if o.topic == env.settings.topic("dlq")]


def header(rec: OutRecord, name: str) -> bytes | None:
    return next((v for k, v in rec.headers if k == name), None)


def limited(cfg: RouteConfig, limit: int, categories: frozenset[str] | None = frozenset({"security", "transactional"})) -> RouteConfig:
    """The routes with one rule: ``limit`` emails per user a day, for ``categories`` (naming security opts it in)."""
    rule = RateRule("email_per_user_day", ("user",), limit, 86400, channels=frozenset({"email"}), categories=categories)
    return replace(cfg, rate_limits=(rule,))


def scenario(fn: Callable[[RouteEnv], Coroutine[Any, Any, None]]) -> Callable[[RouteEnv], None]:
    """A test that runs ``fn`` inside its environment's event loop."""
    def test(route_stores: RouteEnv) -> None:
        route_stores.run(fn)
    test.__name__, test.__doc__ = fn.__name__, fn.__doc__
    return test


# --- the scenarios -------------------------------------------------------------------------

@scenario
async def test_an_order_becomes_one_delivery_per_channel_and_address_each_queued(env: RouteEnv) -> None:
    uid = env.uid()
    await env.add_user(Recipient(uid, email="ada@example.test", phone="+4366412345", first_name="Ada",
                                 devices=[f"{uid}-tok-a", f"{uid}-tok-b"]))  # a token is unique across users
    ev = order_placed(uid)
    out = await env.handler().handle([record(env, "OrderPlaced", ev)])
    ds = deliveries(env, out, ev["event_id"])
    assert sorted((d["channel"], d["address"]) for d in ds) == [
        ("email", "ada@example.test"), ("push", f"{uid}-tok-a"), ("push", f"{uid}-tok-b"), ("sms", "+4366412345")]
    assert all(d["lane"] == "interactive" and d["notification_id"] == ev["event_id"] for d in ds)
    assert "2 x Mug: 25.50 EUR" in next(d["text"] for d in ds if d["channel"] == "email")
    assert statuses(env, out, ev["event_id"]) == [("email", "queued", None), ("push", "queued", None),
                                                 ("push", "queued", None), ("sms", "queued", None)]
    topics = {o.topic for o in out if o.topic.startswith(env.settings.topic("deliver"))}
    assert topics == {env.settings.topic(f"deliver.{ch}") for ch in Channel}


@scenario
async def test_a_security_event_is_routed_first_in_its_batch(env: RouteEnv) -> None:
    uids = [env.uid() for _ in range(4)]
    for uid in uids:
        await env.add_user(Recipient(uid, email=f"{uid}@example.test", first_name="Ada"))
    orders = [order_placed(uid) for uid in uids[:3]]
    reset = password_reset(uids[3])
    out = await env.handler().handle([record(env, "OrderPlaced", ev) for ev in orders] + [record(env, "PasswordResetRequested", reset)])
    assert [d["event_id"] for d in decoded(env, out, "Delivery")] == [reset["event_id"]] + [ev["event_id"] for ev in orders]


@scenario
async def test_a_security_event_travels_the_critical_deliver_topic_and_an_order_the_interactive_one(env: RouteEnv) -> None:
    """The critical lane: a password reset's delivery goes to deliver.email.critical (its own agent), never behind
    the orders queued on deliver.email."""
    uids = [env.uid() for _ in range(2)]
    for uid in uids:
        await env.add_user(Recipient(uid, email=f"{uid}@example.test", first_name="Ada"))
    order, reset = order_placed(uids[0]), password_reset(uids[1])
    out = await env.handler().handle([record(env, "OrderPlaced", order), record(env, "PasswordResetRequested", reset)])
    topic_of = {env.codec.decode(o.value).record["event_id"]: o.topic for o in out
                if o.topic.startswith(env.settings.topic("deliver."))}
    assert topic_of == {order["event_id"]: env.settings.topic("deliver.email"),
                        reset["event_id"]: env.settings.topic("deliver.email.critical")}


@scenario
async def test_a_duplicate_event_is_notified_once_even_after_redis_forgets(env: RouteEnv) -> None:
    uid = env.uid()
    await env.add_user(Recipient(uid, email="d@example.test"))
    ev = order_placed(uid)
    handler = env.handler()
    first = await handler.handle([record(env, "OrderPlaced", ev), record(env, "OrderPlaced", ev)])  # twice in a batch
    again = await handler.handle([record(env, "OrderPlaced", ev)])                                   # and later
    await env.empty_fast_claims()
    after_flush = await handler.handle([record(env, "OrderPlaced", ev)])                             # PostgreSQL remembers
    assert len(deliveries(env, first, ev["event_id"])) == 1
    assert deliveries(env, again, ev["event_id"]) == [] == deliveries(env, after_flush, ev["event_id"])
    assert statuses(env, again + after_flush, ev["event_id"]) == []


@scenario
async def test_a_redelivered_record_finds_its_own_claim_and_goes_on(env: RouteEnv) -> None:
    """A crash after claiming, before committing: the same Kafka position comes back and is not a duplicate."""
    uid = env.uid()
    await env.add_user(Recipient(uid, email="c@example.test"))
    rec = record(env, "PasswordResetRequested", password_reset(uid))
    handler = env.handler()
    first, second = await handler.handle([rec]), await handler.handle([rec])
    event_id = env.codec.decode(rec.value).record["event_id"]
    assert statuses(env, first, event_id) == statuses(env, second, event_id) == [("email", "queued", None)]


@scenario
async def test_preferences_suppress_and_an_opt_out_is_honoured_by_the_next_event(env: RouteEnv) -> None:
    uid, muted = env.uid(), env.uid()
    await env.add_user(Recipient(uid, email="p@example.test"))
    await env.add_user(Recipient(muted, email="m@example.test", categories={"transactional": False}))
    handler = env.handler()
    first = order_placed(uid)
    out = await handler.handle([record(env, "OrderPlaced", first)])      # caches the recipient
    assert ("email", "queued", None) in statuses(env, out, first["event_id"])
    await env.change_user(Recipient(uid, email="p@example.test", channels={"email": False}))
    second, blocked = order_placed(uid), order_placed(muted)
    out = await handler.handle([record(env, "OrderPlaced", second), record(env, "OrderPlaced", blocked)])
    assert ("email", "suppressed", "preference") in statuses(env, out, second["event_id"])
    assert ("email", "suppressed", "preference") in statuses(env, out, blocked["event_id"])
    reset = password_reset(muted)  # security is critical: preferences do not apply
    out = await handler.handle([record(env, "PasswordResetRequested", reset)])
    assert statuses(env, out, reset["event_id"]) == [("email", "queued", None)]


@scenario
async def test_no_address_or_no_user_is_skipped(env: RouteEnv) -> None:
    uid = env.uid()
    await env.add_user(Recipient(uid, email="s@example.test"))
    ev, nobody = order_placed(uid), order_placed(env.uid())
    out = await env.handler().handle([record(env, "OrderPlaced", ev), record(env, "OrderPlaced", nobody)])
    assert statuses(env, out, ev["event_id"]) == [("email", "queued", None), ("push", "skipped", "no_address"),
                                                 ("sms", "skipped", "no_address")]
    assert statuses(env, out, nobody["event_id"]) == [(ch, "skipped", "no_recipient") for ch in ("email", "push", "sms")]


@scenario
async def test_quiet_hours_defer_sms_and_push_to_a_scheduled_row(env: RouteEnv) -> None:
    uid = env.uid()
    now = datetime.now(UTC)
    start, end = (now - timedelta(hours=1)).time(), (now + timedelta(hours=1)).time()
    await env.add_user(Recipient(uid, email="q@example.test", phone="+4399", devices=[f"{uid}-tok-q"],
                                 quiet_start=clock(start.hour, start.minute), quiet_end=clock(end.hour, end.minute)))
    ev = order_placed(uid)
    out = await env.handler().handle([record(env, "OrderPlaced", ev)])
    assert statuses(env, out, ev["event_id"]) == [("email", "queued", None), ("push", "deferred", "quiet_hours"),
                                                 ("sms", "deferred", "quiet_hours")]
    assert [d["channel"] for d in deliveries(env, out, ev["event_id"])] == ["email"]
    rows = await env.scheduled(ev["event_id"])
    assert [(kind, topic) for kind, topic, _ in rows] == [("quiet_hours", env.settings.topic("deliver.push")),
                                                          ("quiet_hours", env.settings.topic("deliver.sms"))]


@scenario
async def test_send_at_in_the_future_is_a_scheduled_row_and_once_only(env: RouteEnv) -> None:
    uid = env.uid()
    await env.add_user(Recipient(uid, email="b@example.test"))
    later: dict[str, Any] = {"event_id": f"b-{uuid.uuid4().hex[:8]}", "occurred_at": now_ms(), "user_id": uid, "age": 30,
             "send_at": now_ms() + 3_600_000}
    rec = record(env, "BirthdayReached", later)
    handler = env.handler()
    out = await handler.handle([rec])
    await handler.handle([rec])  # a retried batch: the row's dedup key keeps it one
    assert statuses(env, out, later["event_id"]) == [(None, "scheduled", "send_at")]
    assert deliveries(env, out, later["event_id"]) == []
    assert await env.scheduled(later["event_id"]) == [("send_at", env.settings.topic("events"), f"send_at:{later['event_id']}")]


@scenario
async def test_over_the_limit_is_rate_limited(env: RouteEnv) -> None:
    uid = env.uid()
    await env.add_user(Recipient(uid, email="r@example.test"))
    resets = [password_reset(uid) for _ in range(3)]
    out = await env.handler(limited(CFG, 2)).handle([record(env, "PasswordResetRequested", r) for r in resets])
    got = [statuses(env, out, r["event_id"]) for r in resets]
    assert got == [[("email", "queued", None)]] * 2 + [[("email", "rate_limited", "email_per_user_day")]]


@scenario
async def test_a_critical_category_is_exempt_from_caps_that_do_not_name_it(env: RouteEnv) -> None:
    """Three password resets under a one-a-day email cap that does not name security: all go out."""
    uid = env.uid()
    await env.add_user(Recipient(uid, email="s@example.test"))
    resets = [password_reset(uid) for _ in range(3)]
    out = await env.handler(limited(CFG, 1, categories=None)).handle([record(env, "PasswordResetRequested", r) for r in resets])
    assert [statuses(env, out, r["event_id"]) for r in resets] == [[("email", "queued", None)]] * 3


@scenario
async def test_the_default_email_cap_is_per_category(env: RouteEnv) -> None:
    """The packaged rule counts each category apart: marketing mail does not use up the transactional allowance."""
    uid = env.uid()
    await env.add_user(Recipient(uid, email="c@example.test"))
    [rule] = [r for r in CFG.rate_limits if r.name == "email_per_user_day"]
    cfg = replace(CFG, rate_limits=(replace(rule, limit=1),))
    marketing = request(uid, "weekly_digest", ["email"], {"headline": "News"}, category="marketing")
    transactional = request(uid, "weekly_digest", ["email"], {"headline": "Receipt"}, category="transactional")
    more = request(uid, "weekly_digest", ["email"], {"headline": "Again"}, category="marketing")
    out = await env.handler(cfg).handle([record(env, "NotificationRequested", r) for r in (marketing, transactional, more)])
    assert [statuses(env, out, r["event_id"]) for r in (marketing, transactional, more)] == [
        [("email", "queued", None)], [("email", "queued", None)], [("email", "rate_limited", "email_per_user_day")]]


@scenario
async def test_a_batch_handled_again_counts_its_limits_once(env: RouteEnv) -> None:
    uid = env.uid()
    await env.add_user(Recipient(uid, email="t@example.test"))
    batch = [record(env, "PasswordResetRequested", password_reset(uid)) for _ in range(2)]
    handler = env.handler(limited(CFG, 2))
    for _ in range(3):  # an outage's retries
        out = await handler.handle(batch)
        assert sorted(s["status"] for s in decoded(env, out, "StatusChange")) == [Status.QUEUED] * 2
    one_more = password_reset(uid)
    out = await handler.handle([record(env, "PasswordResetRequested", one_more)])
    assert statuses(env, out, one_more["event_id"]) == [("email", "rate_limited", "email_per_user_day")]


@scenario
async def test_a_render_failure_dead_letters_and_releases_the_claim_for_the_replay(env: RouteEnv) -> None:
    uid, code = env.uid(), f"broken_{uuid.uuid4().hex[:6]}"
    await env.add_user(Recipient(uid, phone="+4311", first_name="Ada"))
    await env.add_template(TemplateSource(code, "sms", "default", 1, "Hi {{ user.first_name }}, {{ verification_code }}"))
    req = request(uid, code, ["sms"])
    handler = env.handler()
    out = await handler.handle([record(env, "NotificationRequested", req)])
    [letter] = dead(env, out)
    assert (header(letter, STAGE), header(letter, ERROR_CLASS)) == (b"render", b"render_error")
    assert deliveries(env, out, req["event_id"]) == []
    await env.add_template(TemplateSource(code, "sms", "default", 2, "Hi {{ user.first_name }}, {{ verification_code | default('none') }}"))
    replay = InRecord(env.settings.topic("events"), 0, next(_offsets), letter.key, letter.value)  # from the DLQ: a new position
    out = await handler.handle([replay])
    assert [d["text"] for d in deliveries(env, out, req["event_id"])] == ["Hi Ada, none"]


@scenario
async def test_a_too_large_rendering_dead_letters_its_record_only(env: RouteEnv) -> None:
    uid = env.uid()
    await env.add_user(Recipient(uid, email="l@example.test"))
    settings = env.settings.model_copy(update={"max_record_bytes": 50_000})
    huge = request(uid, "weekly_digest", ["email"], {"headline": "x" * 60_000})
    resets = [password_reset(uid) for _ in range(2)]
    batch = [record(env, "PasswordResetRequested", resets[0]), record(env, "NotificationRequested", huge),
             record(env, "PasswordResetRequested", resets[1])]
    out = await env.handler(settings=settings).handle(batch)
    [letter] = dead(env, out)
    assert (header(letter, STAGE), header(letter, ERROR_CLASS)) == (b"render", b"too_large")
    assert deliveries(env, out, huge["event_id"]) == [] and statuses(env, out, huge["event_id"]) == []
    assert [statuses(env, out, r["event_id"]) for r in resets] == [[("email", "queued", None)]] * 2
    # its claim was given back: sent again once the limit is raised, it is delivered, not taken for a duplicate
    out = await env.handler().handle([record(env, "NotificationRequested", huge)])
    assert statuses(env, out, huge["event_id"]) == [("email", "queued", None)]


@scenario
async def test_an_inline_recipient_is_used_only_for_a_user_herald_does_not_store(env: RouteEnv) -> None:
    stored, unknown = env.uid(), env.uid()
    await env.add_user(Recipient(stored, email="stored@example.test"))
    inline: dict[str, Any] = {"email": "inline@example.test", "phone": None, "push_tokens": [], "locale": None, "time_zone": None,
              "first_name": None}
    known_req = request(stored, "weekly_digest", ["email"], inline=inline)
    unknown_req = request(unknown, "weekly_digest", ["email"], inline=inline)
    out = await env.handler().handle([record(env, "NotificationRequested", known_req),
                                      record(env, "NotificationRequested", unknown_req)])
    assert [d["address"] for d in deliveries(env, out, known_req["event_id"])] == ["stored@example.test"]
    assert [d["address"] for d in deliveries(env, out, unknown_req["event_id"])] == ["inline@example.test"]


@scenario
async def test_an_expired_event_says_so_per_channel_and_claims_nothing(env: RouteEnv) -> None:
    uid = env.uid()
    await env.add_user(Recipient(uid, email="x@example.test"))
    old = order_placed(uid, occurred_at=now_ms() - 2 * 86_400_000)
    out = await env.handler().handle([record(env, "OrderPlaced", old)])
    assert statuses(env, out, old["event_id"]) == [(ch, "expired", "ttl") for ch in ("email", "push", "sms")]
    assert deliveries(env, out, old["event_id"]) == []


@scenario
async def test_a_campaign_message_goes_to_the_bulk_lane_without_a_queued_status(env: RouteEnv) -> None:
    uid = env.uid()
    await env.add_user(Recipient(uid, email="c@example.test"))
    camp = {"event_id": f"c1:{uid}", "occurred_at": now_ms(), "campaign_id": "c1", "user_id": uid,
            "template": "weekly_digest", "channels": ["email"], "category": "marketing", "variables_json": "{}"}
    settings = env.settings.model_copy(update={"queued_status_bulk": False})
    out = await env.handler(settings=settings).handle([record(env, "CampaignMessage", camp, topic="bulk")])
    [d] = deliveries(env, out, camp["event_id"])
    assert d["lane"] == "bulk" and d["campaign_id"] == "c1"
    assert [o.topic for o in out] == [env.settings.topic("deliver.email.bulk")]  # its "sent" makes the row


@scenario
async def test_a_campaign_chunk_routes_each_recipient_and_packs_their_deliveries(env: RouteEnv) -> None:
    ada, nameless, opted_out, unknown = (env.uid() for _ in range(4))
    await env.add_user(Recipient(ada, email="ada@example.test", first_name="Ada"))
    await env.add_user(Recipient(nameless, email="n@example.test"))
    await env.add_user(Recipient(opted_out, email="o@example.test", categories={"marketing": False}))
    cid = f"c-{uuid.uuid4().hex[:6]}"
    chunk = {"chunk_id": f"{cid}:0", "occurred_at": now_ms(), "campaign_id": cid, "template": "weekly_digest",
             "channels": ["email"], "category": "marketing", "variables_json": json.dumps({"headline": "Spring is here"}),
             "user_ids": [ada, nameless, opted_out, unknown, "bad\x00id"],
             "user_variables_json": [None, json.dumps({"headline": "Just for you"}), None, None, None]}
    rec = InRecord(env.settings.topic("bulk"), 0, next(_offsets), b"chunk", env.codec.encode("CampaignChunk", chunk))
    out = await env.handler().handle([rec])
    packed = [o for o in out if o.topic == env.settings.topic("deliver.email.bulk")]
    assert len(packed) == 1 and env.codec.decode(packed[0].value).name == "DeliveryChunk"
    by_user = {d["user_id"]: d for d in decoded(env, out, "Delivery")}
    assert set(by_user) == {ada, nameless}
    assert by_user[ada]["event_id"] == f"{cid}:{ada}" and by_user[ada]["lane"] == "bulk"
    assert by_user[ada]["text"].startswith("Hi Ada,") and "Spring is here" in by_user[ada]["text"]
    assert by_user[nameless]["text"].startswith("Hi there,") and "Just for you" in by_user[nameless]["text"]
    assert statuses(env, out, f"{cid}:{opted_out}") == [("email", "suppressed", "preference")]
    assert statuses(env, out, f"{cid}:{unknown}") == [("email", "skipped", "no_recipient")]
    [letter] = dead(env, out)   # the one id that cannot be routed, named; the rest of the chunk went on
    assert letter.value == rec.value and b"1 recipient(s) not routed" in dict(letter.headers)[ERROR_TEXT]
    # the same record read again (a crash before the commit) holds its claims: its deliveries are made again and
    # the ledger stops a second send; the chunk sent again by a resumed campaign (a new record) is a duplicate
    assert len(decoded(env, await env.handler().handle([rec]), "Delivery")) == 2
    resent = InRecord(rec.topic, 0, next(_offsets), rec.key, rec.value)
    assert decoded(env, await env.handler().handle([resent]), "Delivery") == []


def campaign_chunk(env: RouteEnv, users: list[str], channels: list[str] | None = None) -> InRecord:
    cid = f"c-{uuid.uuid4().hex[:6]}"
    chunk = {"chunk_id": f"{cid}:0", "occurred_at": now_ms(), "campaign_id": cid, "template": "weekly_digest",
             "channels": channels or ["email"], "category": "marketing", "variables_json": json.dumps({"headline": "News"}),
             "user_ids": users, "user_variables_json": []}
    return InRecord(env.settings.topic("bulk"), 0, next(_offsets), b"chunk", env.codec.encode("CampaignChunk", chunk))


@scenario
async def test_a_campaign_chunk_reads_push_tokens_only_when_it_sends_push(env: RouteEnv) -> None:
    """An email-only chunk skips the device look-up; a chunk that also sends push reaches every active token."""
    uid = env.uid()
    await env.add_user(Recipient(uid, email=f"{uid}@example.test", devices=[f"{uid}-tok-a", f"{uid}-tok-b"]))
    out = await env.handler().handle([campaign_chunk(env, [uid])])
    assert [(d["channel"], d["address"]) for d in decoded(env, out, "Delivery")] == [("email", f"{uid}@example.test")]
    out = await env.handler().handle([campaign_chunk(env, [uid], channels=["email", "push"])])
    assert sorted((d["channel"], d["address"]) for d in decoded(env, out, "Delivery")) == [
        ("email", f"{uid}@example.test"), ("push", f"{uid}-tok-a"), ("push", f"{uid}-tok-b")]


@scenario
async def test_a_campaign_chunk_handled_again_reads_each_recipients_limit_decision_from_its_place(env: RouteEnv) -> None:
    """A chunk's decisions are kept per record at each recipient's place in it: a retry in which a recipient
    before another dropped out (opted out meanwhile) still gives each the answer it had, and counts nothing twice."""
    full, opts_out, later = (env.uid() for _ in range(3))
    for uid in (full, opts_out, later):
        await env.add_user(Recipient(uid, email=f"{uid}@example.test"))
    handler = env.handler(limited(CFG, 2, frozenset({"marketing"})))
    for _ in range(2):
        await handler.handle([campaign_chunk(env, [full])])
    rec = campaign_chunk(env, [opts_out, full, later])
    cid = env.codec.decode(rec.value).record["campaign_id"]
    out = await handler.handle([rec])
    assert {d["user_id"] for d in decoded(env, out, "Delivery")} == {opts_out, later}
    assert statuses(env, out, f"{cid}:{full}") == [("email", "rate_limited", "email_per_user_day")]
    await env.change_user(Recipient(opts_out, email=f"{opts_out}@example.test", categories={"marketing": False}))
    out = await handler.handle([rec])   # the batch again: a crash before its commit
    assert {d["user_id"] for d in decoded(env, out, "Delivery")} == {later}
    assert statuses(env, out, f"{cid}:{full}") == [("email", "rate_limited", "email_per_user_day")]
    # ``later`` was counted once for that chunk: one more campaign fits its limit of 2, the one after does not
    assert [d["user_id"] for d in decoded(env, await handler.handle([campaign_chunk(env, [later])]), "Delivery")] == [later]
    assert decoded(env, await handler.handle([campaign_chunk(env, [later])]), "Delivery") == []


@scenario
async def test_a_thousand_recipients_of_a_30kb_newsletter_travel_in_one_chunk_that_carries_the_html_once(
        env: RouteEnv) -> None:
    code = f"newsletter_{uuid.uuid4().hex[:6]}"
    story = "<tr><td>This week's story, with its picture and a link.</td></tr>" * 500
    await env.add_template(TemplateSource(code, "email", "default", 1, "Hi {{ user.first_name or 'there' }},\n{{ headline }}",
                                          subject="News for {{ user.first_name or 'you' }}!",
                                          body_html=f"<p>Hi {{{{ user.first_name or 'there' }}}},</p><table>{story}</table>"))
    users = [env.uid() for _ in range(1000)]
    for i, uid in enumerate(users):
        await env.add_user(Recipient(uid, email=f"{uid}@example.test", first_name=f"N{i} <&>" if i % 2 else None))
    cid = f"c-{uuid.uuid4().hex[:6]}"
    chunk = {"chunk_id": f"{cid}:0", "occurred_at": now_ms(), "campaign_id": cid, "template": code, "channels": ["email"],
             "category": "marketing", "variables_json": json.dumps({"headline": "Spring <is> here"}), "user_ids": users,
             "user_variables_json": []}
    rec = InRecord(env.settings.topic("bulk"), 0, next(_offsets), b"chunk", env.codec.encode("CampaignChunk", chunk))
    out = await env.handler().handle([rec])
    [packed] = [o for o in out if o.topic == env.settings.topic("deliver.email.bulk")]
    assert len(packed.value or b"") < 200_000   # 1000 whole emails would be over 30 MB
    record = env.codec.decode(packed.value).record
    assert record["shared"]["html"][-1].endswith("</table>") and len(record["columns"]["delivery_id"]) == 1000
    by_user = {d.user_id: d for d in chunk_deliveries(record)}
    assert by_user[users[1]].subject == "News for N1 <&>!"
    assert by_user[users[1]].text == "Hi N1 <&>,\nSpring <is> here"
    assert by_user[users[0]].html == f"<p>Hi there,</p><table>{story}</table>"
    assert by_user[users[1]].html == f"<p>Hi N1 &lt;&amp;&gt;,</p><table>{story}</table>"


@scenario
async def test_a_small_campaign_template_travels_whole_per_recipient(env: RouteEnv) -> None:
    """Below HERALD_BULK_SHARE_MIN_BYTES of literal text, slot bookkeeping would cost more than it saves."""
    code = f"small_{uuid.uuid4().hex[:6]}"
    await env.add_template(TemplateSource(code, "email", "default", 1, "Hi {{ user.first_name or 'there' }}",
                                          subject="News", body_html="<p>Hi {{ user.first_name or 'there' }}</p>"))
    users = [env.uid() for _ in range(3)]
    for uid in users:
        await env.add_user(Recipient(uid, email=f"{uid}@example.test", first_name="Ada"))
    cid = f"c-{uuid.uuid4().hex[:6]}"
    chunk = {"chunk_id": f"{cid}:0", "occurred_at": now_ms(), "campaign_id": cid, "template": code, "channels": ["email"],
             "category": "marketing", "variables_json": "{}", "user_ids": users, "user_variables_json": []}
    rec = InRecord(env.settings.topic("bulk"), 0, next(_offsets), b"chunk", env.codec.encode("CampaignChunk", chunk))
    out = await env.handler().handle([rec])
    [packed] = [o for o in out if o.topic == env.settings.topic("deliver.email.bulk")]
    record = env.codec.decode(packed.value).record
    assert record["shared"] is None and record["columns"]["html"] == ["<p>Hi Ada</p>"] * 3


@scenario
async def test_a_canceled_campaign_ends_canceled_at_route_without_a_claim_or_a_render(env: RouteEnv) -> None:
    ada = env.uid()
    await env.add_user(Recipient(ada, email="ada@example.test", first_name="Ada"))
    cid = f"c-{uuid.uuid4().hex[:6]}"
    chunk = {"chunk_id": f"{cid}:0", "occurred_at": now_ms(), "campaign_id": cid, "template": "weekly_digest",
             "channels": ["email"], "category": "marketing", "variables_json": json.dumps({"headline": "Spring"}),
             "user_ids": [ada], "user_variables_json": []}
    rec = InRecord(env.settings.topic("bulk"), 0, next(_offsets), b"chunk", env.codec.encode("CampaignChunk", chunk))
    await env.cancel_campaign(cid)
    out = await env.handler().handle([rec])
    assert decoded(env, out, "Delivery") == [] and dead(env, out) == []
    assert statuses(env, out, f"{cid}:{ada}") == [("email", "canceled", "campaign canceled")]


# --- over the twins only: the round-trip budget as the twins count it -------------------------

def push_then_sms(cfg: RouteConfig, unless: str = "delivered") -> RouteConfig:
    """OrderPlaced on push alone, falling back to SMS ten minutes later unless ``unless``."""
    order = replace(cfg.routes["OrderPlaced"], channels=("push",), fallback=Fallback(600, unless, "sms"))
    return replace(cfg, routes={**cfg.routes, "OrderPlaced": order})


@scenario
async def test_a_fallback_goes_on_its_channel_only_while_no_receipt_met_its_condition(env: RouteEnv) -> None:
    cfg = push_then_sms(CFG)
    handler = env.handler(cfg)
    delivered, silent = env.uid(), env.uid()
    for uid in (delivered, silent):
        await env.add_user(Recipient(uid, phone=f"+43{uid[-6:].encode().hex()[:9]}", devices=[f"{uid}-tok"]))
    a, b = order_placed(delivered), order_placed(silent)
    first = [record(env, "OrderPlaced", ev) for ev in (a, b)]
    out = await handler.handle(first)
    assert sorted(d["channel"] for d in decoded(env, out, "Delivery")) == ["push", "push"]
    await handler.handle(first)   # handled again (a crash before the commit): still one check each
    for ev in (a, b):
        assert await env.scheduled(ev["event_id"]) == [("fallback", env.settings.topic("events"), f"fallback:{ev['event_id']}")]

    await env.receipt(a["event_id"], Channel.PUSH, Status.DELIVERED)
    due = [await env.published(ev["event_id"], "fallback") for ev in (a, b)]
    out = await handler.handle(due)
    assert deliveries(env, out, a["event_id"]) == []
    assert statuses(env, out, a["event_id"]) == [("sms", "skipped", "fallback_not_needed: delivered")]
    [sms] = deliveries(env, out, b["event_id"])
    assert (sms["channel"], sms["notification_id"]) == ("sms", b["event_id"])
    assert statuses(env, out, b["event_id"]) == [("sms", "queued", None)]

    again = await env.published(b["event_id"], "fallback")   # published twice (the scheduler died before its delete)
    assert deliveries(env, await handler.handle([again]), b["event_id"]) == []


@scenario
async def test_a_fallback_unless_opened_still_goes_after_a_delivered_receipt(env: RouteEnv) -> None:
    handler = env.handler(push_then_sms(CFG, unless="opened"))
    uid = env.uid()
    await env.add_user(Recipient(uid, phone="+4366400001", devices=[f"{uid}-tok"]))
    ev = order_placed(uid)
    await handler.handle([record(env, "OrderPlaced", ev)])
    await env.receipt(ev["event_id"], Channel.PUSH, Status.DELIVERED)
    out = await handler.handle([await env.published(ev["event_id"], "fallback")])
    assert [d["channel"] for d in deliveries(env, out, ev["event_id"])] == ["sms"]


@scenario
async def test_a_campaign_message_is_never_taken_for_a_fallback_check_or_a_digest_closing(env: RouteEnv) -> None:
    """The waiting features belong to the interactive lane: a bulk record's headers are not read for them."""
    uid = env.uid()
    await env.add_user(Recipient(uid, email=f"{uid}@example.test", phone="+4366400002"))
    camp = {"event_id": f"c2:{uid}", "occurred_at": now_ms(), "campaign_id": "c2", "user_id": uid,
            "template": "weekly_digest", "channels": ["email"], "category": "marketing", "variables_json": "{}"}
    plain = record(env, "CampaignMessage", camp, topic="bulk")
    headers = [(FALLBACK, b"sms"), (FALLBACK_UNLESS, b"delivered"), (DIGEST_WINDOW, b"7")]
    out = await env.handler().handle([InRecord(plain.topic, 0, plain.offset, plain.key, plain.value, headers)])
    assert [(d["channel"], d["lane"]) for d in deliveries(env, out, camp["event_id"])] == [("email", "bulk")]
    assert dead(env, out) == [] and deliveries(env, out, "digest:7") == []


DIGEST_TEMPLATE = TemplateSource(
    "follower_digest", "email", "default", 1,
    "{% for e in digest.events %}{{ e.follower_name }};{% endfor %}+{{ digest.omitted }}",
    subject="{{ digest.count }} new followers")


def followers_digest(cfg: RouteConfig, listed: int = 2) -> RouteConfig:
    """UserFollowed collected an hour per user and sent as one email listing ``listed`` followers."""
    route = replace(cfg.routes["UserFollowed"], channels=("email",), template="follower_digest",
                    digest=Digest(3600, ("user_id", "event_type"), listed))
    return replace(cfg, routes={**cfg.routes, "UserFollowed": route})


def followed(user_id: str, name: str, at: int) -> dict[str, Any]:
    return {"event_id": f"f-{uuid.uuid4().hex[:12]}", "occurred_at": at, "user_id": user_id, "follower_id": name,
            "follower_name": name}


@scenario
async def test_a_digest_collects_a_window_and_sends_it_once_listing_the_first_and_last(env: RouteEnv) -> None:
    await env.add_template(DIGEST_TEMPLATE)
    handler = env.handler(followers_digest(CFG))
    uid = env.uid()
    await env.add_user(Recipient(uid, email=f"{uid}@example.test"))
    t = now_ms()
    events = [followed(uid, f"fan{i}", t + i) for i in range(4)]
    out = await handler.handle([record(env, "UserFollowed", ev) for ev in events[:2]])
    out += await handler.handle([record(env, "UserFollowed", ev) for ev in events[2:] + events[:1]])  # and a duplicate
    assert decoded(env, out, "Delivery") == []
    assert statuses(env, out, events[0]["event_id"]) == [(None, "scheduled", "digest")] * 2
    [digest_id] = await env.scheduled_kind("digest")   # one window, one closing row

    closing = await env.published(digest_id, "digest")
    out = await handler.handle([closing])
    [sent] = deliveries(env, out, digest_id)
    assert (sent["channel"], sent["subject"], sent["text"]) == ("email", "4 new followers", "fan0;fan3;+2")
    assert statuses(env, out, events[1]["event_id"]) == [(None, "skipped", f"digested: {digest_id}")]
    assert deliveries(env, await handler.handle([await env.published(digest_id, "digest")]), digest_id) == [], \
        "a closing published twice sends one digest"

    late = followed(uid, "fan9", now_ms())
    await handler.handle([record(env, "UserFollowed", late)])
    assert len(await env.scheduled_kind("digest")) == 2, "an event after the close opens the next window"


def test_the_twins_hold_the_handler_to_two_redis_round_trips_and_four_statements() -> None:
    env = MemoryRouteEnv()
    trips = env.stores.trips
    assert trips is not None

    async def run() -> list[tuple[int, int]]:
        handler = env.handler(refresh_seconds=60)
        seen = []
        for n in (1, 200):
            users = [env.uid() for _ in range(n)]
            for u in users:
                await env.add_user(Recipient(u, email=f"{u}@example.test", phone="+43123"))
            trips.redis = trips.sql = 0
            later = {"event_id": f"b-{uuid.uuid4().hex[:8]}", "occurred_at": now_ms(), "user_id": users[0], "age": 1,
                     "send_at": now_ms() + 60_000}
            await handler.handle([record(env, "OrderPlaced", order_placed(u)) for u in users]
                                 + [record(env, "BirthdayReached", later)])
            seen.append((trips.redis, trips.sql))
        return seen

    assert asyncio.run(run()) == [(2, 4), (2, 3)]  # recipients, dedup, templates (first batch only), scheduled rows
