"""Routes config: the shipped file validates against the schema catalog; bad files name the route and the field."""
from __future__ import annotations

import pytest
import yaml

from schemas.catalog import load_catalog
from streams.routes import RouteConfigError, load_routes, parse_routes

CATALOG = load_catalog()
KNOWN = {n: {f["name"] for f in CATALOG.latest(n).raw["fields"]} for n in CATALOG.versions}
GOOD = {"recipient": "user_id", "template": "t", "channels": ["email"], "category": "social", "ttl_seconds": 60}


def test_shipped_routes_are_valid():
    cfg = load_routes(known_records=KNOWN)
    assert cfg.routes["CampaignMessage"].lane == "bulk" and cfg.is_critical("security")
    assert {r.name: r.limit for r in cfg.rate_limits} == {"email_per_user_day": 10, "per_user_type_hour": 100}


@pytest.mark.parametrize("routes, rules, message", [
    ({"OrderPlaced": {**GOOD, "channels": ["fax"]}}, [], "route 'OrderPlaced': field 'channels': unknown channel 'fax'"),
    ({"OrderPlaced": {**GOOD, "ttl_seconds": 0}}, [], "route 'OrderPlaced': field 'ttl_seconds'"),
    ({"OrderPlaced": {**GOOD, "lane": "fast"}}, [], "route 'OrderPlaced': field 'lane'"),
    ({"OrderPlaced": {**GOOD, "recipient": "nobody"}}, [], "field 'recipient': OrderPlaced has no field 'nobody'"),
    ({"OrderPlaced": {k: v for k, v in GOOD.items() if k != "template"}}, [], "route 'OrderPlaced': field 'template'"),
    ({"OrderPlaced": {**GOOD, "colour": "red"}}, [], "route 'OrderPlaced': unknown field(s) colour"),
    ({"Nope": GOOD}, [], "route 'Nope': no record of that name"),
    ({"OrderPlaced": GOOD}, [{"name": "r", "key": ["planet"], "limit": 1, "window_seconds": 1}], "rate limit 'r': field 'key'"),
    ({"OrderPlaced": GOOD}, [{"name": "r", "key": ["user"], "limit": -1, "window_seconds": 1}], "rate limit 'r': field 'limit'"),
    ({"OrderPlaced": GOOD}, [{"name": "r", "key": ["user"], "limit": 1, "window_seconds": 1}] * 2, "unique"),
    ({"OrderPlaced": {**GOOD, "fallback": {"after": "10x", "unless": "delivered", "to": "sms"}}}, [],
     "route 'OrderPlaced': field 'fallback': 'after': a positive duration"),
    ({"OrderPlaced": {**GOOD, "fallback": {"after": "2m", "unless": "delivered", "to": "sms"}}}, [],
     "'after' (120 s) must be shorter than the route's ttl_seconds (60)"),
    ({"OrderPlaced": {**GOOD, "fallback": {"after": 10, "unless": "read", "to": "sms"}}}, [],
     "field 'fallback': 'unless': one of delivered, opened, got 'read'"),
    ({"OrderPlaced": {**GOOD, "fallback": {"after": 10, "unless": "opened", "to": "email"}}}, [],
     "'to': email is already one of the route's channels"),
    ({"OrderPlaced": {**GOOD, "fallback": {"after": 10, "unless": "opened", "to": "fax"}}}, [],
     "'to': unknown channel 'fax'"),
    ({"OrderPlaced": {**GOOD, "lane": "bulk", "fallback": {"after": 10, "unless": "opened", "to": "sms"}}}, [],
     "only an interactive route falls back"),
    ({"OrderPlaced": {**GOOD, "fallback": {"after": 10, "to": "sms", "when": "x"}}}, [], "unknown field(s) when"),
    ({"OrderPlaced": {**GOOD, "digest": {"window": "1h", "key": ["event_type"]}}}, [],
     "field 'digest': 'key': a list of user_id, event_type, category, template with user_id in it"),
    ({"OrderPlaced": {**GOOD, "digest": {"window": "soon"}}}, [], "field 'digest': 'window': a positive duration"),
    ({"OrderPlaced": {**GOOD, "digest": {"window": "1h", "max": 0}}}, [], "'max': how many events the digest lists"),
    ({"OrderPlaced": {**GOOD, "lane": "bulk", "digest": {"window": "1h"}}}, [], "only an interactive route collects"),
    ({"OrderPlaced": {**GOOD, "digest": {"window": "1h"}, "fallback": {"after": 10, "unless": "opened", "to": "sms"}}},
     [], "a route has a fallback or a digest, not both"),
])
def test_invalid_routes_name_the_route_and_field(routes, rules, message):
    with pytest.raises(RouteConfigError) as err:
        parse_routes({"routes": routes, "rate_limits": rules}, "r.yaml", KNOWN)
    assert message in str(err.value)


@pytest.mark.parametrize("option, raw, lane, message", [
    ("fallback", "10m", "interactive", "field 'fallback': expected a mapping like {after: 10m, unless: delivered, to: sms}"),
    ("fallback", {"after": 10, "unless": "opened", "to": "sms", "when": "x", "if": 1}, "interactive",
     "field 'fallback': unknown field(s) if, when (allowed: after, unless, to)"),
    ("fallback", {"after": 10, "unless": "opened", "to": "sms"}, "bulk",
     "field 'fallback': only an interactive route falls back (a campaign has no per-message fallback)"),
    ("digest", "1h", "interactive", "field 'digest': expected a mapping like {window: 1h, key: [user_id, event_type], max: 50}"),
    ("digest", {"window": "1h", "every": "day"}, "interactive",
     "field 'digest': unknown field(s) every (allowed: key, max, window)"),
    ("digest", {"window": "1h"}, "bulk", "field 'digest': only an interactive route collects a digest"),
])
def test_a_fallback_and_a_digest_are_each_a_mapping_of_their_own_fields_on_an_interactive_route(option, raw, lane, message):
    with pytest.raises(RouteConfigError) as err:
        parse_routes({"routes": {"OrderPlaced": {**GOOD, "lane": lane, option: raw}}}, "r.yaml", KNOWN)
    assert str(err.value) == f"r.yaml: route 'OrderPlaced': {message}"


def test_request_records_need_no_template_and_files_load(tmp_path):
    p = tmp_path / "routes.yaml"
    p.write_text(yaml.safe_dump({"routes": {"NotificationRequested": {"recipient": "user_id", "ttl_seconds": 5}}}))
    assert load_routes(p, KNOWN).routes["NotificationRequested"].template is None
    p.write_text("routes: [unclosed")
    with pytest.raises(RouteConfigError, match="not valid YAML"):
        load_routes(p)


@pytest.mark.parametrize("after, seconds", [(90, 90), ("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400)])
def test_a_fallback_reads_its_delay_in_seconds_minutes_hours_or_days(after, seconds):
    spec = {**GOOD, "ttl_seconds": 172800, "fallback": {"after": after, "unless": "opened", "to": "push"}}
    fallback = parse_routes({"routes": {"OrderPlaced": spec}}, "r.yaml", KNOWN).routes["OrderPlaced"].fallback
    assert fallback is not None and (fallback.after_seconds, fallback.unless, fallback.to) == (seconds, "opened", "push")


def test_a_digest_defaults_to_one_user_and_event_type_and_fifty_listed():
    spec = {**GOOD, "digest": {"window": "1h"}}
    digest = parse_routes({"routes": {"OrderPlaced": spec}}, "r.yaml", KNOWN).routes["OrderPlaced"].digest
    assert digest is not None and (digest.window_seconds, digest.key, digest.max) == (3600, ("user_id", "event_type"), 50)
