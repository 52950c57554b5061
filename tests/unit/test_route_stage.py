"""The route stage's pure functions, as tables of cases: every reason a notification is dropped, deferred or limited."""
from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from schemas.codec import Decoded
from streams.routes import RateRule, load_routes
from streams.stages.route.decide import channel_decision, delivery_record, template_context
from streams.stages.route.identity import classify_claim, delivery_id
from streams.stages.route.intent import Intent, RouteError, intent_for
from streams.stages.route.limits import counters, denied_by, script_args
from streams.stages.route.recipient import Recipient, addresses, from_cache, preference_blocks, to_cache
from streams.stages.route.render import Rendered
from streams.stages.route.timing import is_expired, is_for_later, quiet_until
from streams.templates import Environments, TemplateSource, compile_template

CFG = load_routes()
NOW = 1_800_000_000_000  # 2027-01-15T08:00:00Z


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def intent(**kw) -> Intent:
    base = {"event_id": "e1", "event_type": "OrderPlaced", "user_id": "u1", "template": "t", "channels": ("email",),
                "category": "transactional", "lane": "interactive", "ttl_seconds": 3600, "occurred_ms": NOW, "send_at_ms": None,
                "critical": False, "variables": {}}
    base.update(kw)
    return Intent(**base)


# --- steps 1–2: intent -------------------------------------------------------------

ORDER = {"event_id": "e1", "occurred_at": datetime.fromtimestamp(NOW / 1000, UTC), "user_id": "u1",
         "order_id": "o1", "currency": "EUR", "total_cents": 5, "items": [{"sku": "s", "name": "n", "quantity": 1, "unit_price_cents": 5}],
         "shipping_address": None}
REQ = {"event_id": "n1", "occurred_at": NOW, "user_id": "u1", "template": "weekly_digest", "channels": ["email", "email", "push"],
       "category": "marketing", "variables_json": '{"a": 1}', "send_at": None, "ttl_seconds": 60}


@pytest.mark.parametrize("name, record, bulk, expect", [
    ("OrderPlaced", ORDER, False, {"template": "order_confirmation", "channels": ("email", "sms", "push"), "lane": "interactive",
                                       "category": "transactional", "critical": False, "occurred_ms": NOW}),
    ("PasswordResetRequested", {"event_id": "e", "occurred_at": NOW, "user_id": "u", "reset_url": "x", "expires_in_minutes": 5},
     False, {"category": "security", "critical": True, "ttl_seconds": 1800}),
    ("NotificationRequested", REQ, False, {"template": "weekly_digest", "channels": ("email", "push"), "variables": {"a": 1}, "ttl_seconds": 60}),
    ("NotificationRequested", REQ, True, {"lane": "bulk"}),
    ("CampaignMessage", {"event_id": "c:u", "occurred_at": NOW, "campaign_id": "c", "user_id": "u", "template": "w",
                         "channels": ["email"], "category": "marketing", "variables_json": "{}"}, False,
     {"lane": "bulk", "campaign_id": "c", "ttl_seconds": 604800}),
])
def test_intent_from_routes_and_request_records(name, record, bulk, expect):
    it = intent_for(Decoded(name, 1, record), CFG, bulk=bulk)
    for k, v in expect.items():
        assert getattr(it, k) == v, k


def test_domain_event_variables_are_its_own_fields_nested_included():
    it = intent_for(Decoded("OrderPlaced", 1, ORDER), CFG)
    assert it.variables["items"][0]["name"] == "n" and it.variables["order_id"] == "o1"


@pytest.mark.parametrize("name, record, reason", [
    ("Receipt", {"event_id": "x", "user_id": "u"}, "no_route"),
    ("OrderPlaced", {**ORDER, "user_id": ""}, "bad_event"),
    ("NotificationRequested", {**REQ, "variables_json": "{not json"}, "bad_variables"),
    ("NotificationRequested", {**REQ, "variables_json": "[1, 2]"}, "bad_variables"),
    ("NotificationRequested", {**REQ, "channels": []}, "bad_event"),
    ("NotificationRequested", {**REQ, "template": ""}, "bad_event"),
])
def test_unroutable_records_name_their_reason(name, record, reason):
    with pytest.raises(RouteError) as err:
        intent_for(Decoded(name, 1, record), CFG)
    assert err.value.reason == reason


# --- steps 4–5: TTL and send_at ----------------------------------------------------------

@pytest.mark.parametrize("occurred, send_at, ttl, expired", [
    (NOW, None, 60, False),
    (NOW - 60_000, None, 60, False),          # exactly the TTL: still fresh
    (NOW - 60_001, None, 60, True),
    (NOW - 3_600_000, NOW - 10_000, 60, False),  # TTL counts from send_at when later (a scheduled event)
    (NOW - 3_600_000, NOW - 61_000, 60, True),
])
def test_expiry(occurred, send_at, ttl, expired):
    assert is_expired(intent(occurred_ms=occurred, send_at_ms=send_at, ttl_seconds=ttl), NOW) is expired


@pytest.mark.parametrize("send_at, later", [(None, False), (NOW + 1, True), (NOW, False), (NOW - 5000, False)])
def test_send_at_due_or_later(send_at, later):
    assert is_for_later(intent(send_at_ms=send_at), NOW) is later


# --- step 8: quiet hours (NOW is 08:00 UTC = 09:00 Vienna, 03:00 New York) ----------------------

@pytest.mark.parametrize("tz, start, end, until", [
    ("UTC", None, None, None),
    ("UTC", time(22), time(7), None),                                  # 08:00: after the window
    ("UTC", time(7), time(9), ms("2027-01-15T09:00:00+00:00")),
    ("Europe/Vienna", time(8, 30), time(10), ms("2027-01-15T10:00:00+01:00")),
    ("America/New_York", time(22), time(7), ms("2027-01-15T07:00:00-05:00")),   # spans midnight, early morning side
    ("Asia/Tokyo", time(16), time(7), ms("2027-01-16T07:00:00+09:00")),         # 17:00 Tokyo: ends tomorrow
    ("Not/AZone", time(7), time(9), ms("2027-01-15T09:00:00+00:00")),           # unknown zone read as UTC
    ("UTC", time(8), time(8), None),                                   # empty window
])
def test_quiet_hours_end_in_the_users_zone(tz, start, end, until):
    assert quiet_until(NOW, tz, start, end) == until


# --- steps 6–7: addresses and preferences ------------------------------------------------------

R = Recipient("u1", email="a@x.test", phone="+431", devices=["t1", "t2", "t1"])


@pytest.mark.parametrize("recipient, channel, category, critical, expect", [
    (None, "email", "transactional", False, ("skipped", "no_recipient")),
    (R, "email", "transactional", False, ["a@x.test"]),
    (R, "push", "transactional", False, ["t1", "t2"]),
    (Recipient("u", email=None), "email", "transactional", False, ("skipped", "no_address")),
    (Recipient("u", email="a@x", email_undeliverable=True), "email", "transactional", False, ("skipped", "no_address")),
    (Recipient("u", phone="+1", phone_undeliverable=True), "sms", "transactional", False, ("skipped", "no_address")),
    (Recipient("u", devices=[]), "push", "social", False, ("skipped", "no_address")),
    (Recipient("u", email="a@x", muted=True), "email", "transactional", False, ("suppressed", "preference")),
    (Recipient("u", email="a@x", channels={"email": False}), "email", "social", False, ("suppressed", "preference")),
    (Recipient("u", email="a@x", channels={"sms": False}), "email", "social", False, ["a@x"]),
    (Recipient("u", email="a@x", categories={"marketing": False}), "email", "marketing", False, ("suppressed", "preference")),
    (Recipient("u", email="a@x", categories={"marketing": True}), "email", "marketing", False, ["a@x"]),
    (Recipient("u", email="a@x", muted=True, channels={"email": False}), "email", "security", True, ["a@x"]),  # critical bypasses
])
def test_channel_decision(recipient, channel, category, critical, expect):
    assert channel_decision(intent(category=category, critical=critical), channel, recipient) == expect


def test_recipient_cache_round_trip():
    r = Recipient("u", "a@x", "+1", "de-AT", "Europe/Vienna", "Zoë", True, False, ["t"], True, {"sms": False},
                  {"marketing": False}, time(22), time(7, 30))
    assert from_cache(to_cache(r)) == r
    assert preference_blocks(r, "email", "social", critical=False) and addresses(r, "email") == []


# --- step 9: rate-limit counters ---------------------------------------------------------------

def test_counters_follow_rules_and_windows():
    rules = (RateRule("day", ("user",), 10, 86400, channels=frozenset({"email"})),
             RateRule("type", ("user", "event_type", "channel"), 100, 3600),
             RateRule("mkt", ("user", "category"), 1, 60, categories=frozenset({"marketing"})))
    cs = counters(rules, "p:rl", user="u", channel="email", category="transactional", event_type="OrderPlaced", now_ms=NOW)
    assert [(c.rule, c.limit) for c in cs] == [("day", 10), ("type", 100)]
    assert cs[0].key == f"p:rl:day:u:{NOW // 86_400_000}" and cs[1].key == f"p:rl:type:u:OrderPlaced:email:{NOW // 3_600_000}"
    assert [c.rule for c in counters(rules, "p", user="u", channel="sms", category="marketing", event_type="X", now_ms=NOW)] == ["type", "mkt"]
    # the next window is a new counter
    later = counters(rules, "p:rl", user="u", channel="email", category="t", event_type="OrderPlaced", now_ms=NOW + 3_600_000)
    assert later[1].key != cs[1].key


def test_script_args_share_keys_and_results_name_the_rule():
    rules = (RateRule("day", ("user",), 10, 86400),)
    a = counters(rules, "p", user="u", channel="email", category="c", event_type="E", now_ms=NOW)
    b = counters(rules, "p", user="u", channel="sms", category="c", event_type="E", now_ms=NOW)
    keys, argv = script_args([a, b])
    assert keys == [a[0].key] and argv == [2, 1, 1, 10, 86460, 1, 1, 10, 86460]
    assert denied_by([a, b], [0, 1]) == [None, "day"]


# --- identities --------------------------------------------------------------------------------

@pytest.mark.parametrize("previous, kind", [(None, "new"), (b"", "new"), (b"t:0:5", "mine"), ("t:0:5", "mine"), (b"t:1:5", "duplicate")])
def test_claims(previous, kind):
    assert classify_claim(previous, "t:0:5") == kind


def test_delivery_id_is_stable_per_event_channel_address():
    assert delivery_id("e", "email", "a") == delivery_id("e", "email", "a")
    assert len({delivery_id("e", "email", "a"), delivery_id("e", "sms", "a"), delivery_id("e", "email", "b"),
                delivery_id("f", "email", "a")}) == 4


def test_delivery_record_and_context():
    it = intent(variables={"order_id": "o"}, send_at_ms=NOW + 1000, campaign_id="c")
    ctx = template_context(it, Recipient("u1", first_name="Ada", locale="de"))
    assert ctx["order_id"] == "o" and ctx["user"]["first_name"] == "Ada" and ctx["notification_id"] == "e1"
    t = compile_template(Environments(), TemplateSource("t", "email", "de", 3, "x"))
    d = delivery_record(it, "email", "a@x", t, Rendered("x", subject="s")).to_avro()
    assert d["template_version"] == 3 and d["locale"] == "de" and d["expires_at"] == NOW + 1000 + 3_600_000
    assert d["delivery_id"] == delivery_id("e1", "email", "a@x") and d["campaign_id"] == "c" and d["attempt"] == 0


def test_rate_limit_keys_of_different_users_never_collide():
    rules = (RateRule("cat", ("user", "category"), 10, 86400),)
    a = counters(rules, "p", user="u:marketing", channel="email", category="x", event_type="E", now_ms=NOW)
    b = counters(rules, "p", user="u", channel="email", category="marketing:x", event_type="E", now_ms=NOW)
    assert a[0].key != b[0].key
