"""Hypothesis against the API in-process (TestClient, real PostgreSQL, Redis and Kafka): hostile bodies, paths, queries.

NUL bytes, lone surrogates, huge strings, wrong types and deep nesting: every answer is a 2xx or a 4xx in
Herald's error body, never a 500, and a 4xx never echoes a hostile value.
"""
from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from tests.integration.test_api_http import FCM, Api, api  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

FUZZ = hsettings(max_examples=40, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
SURROGATES = st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])
ID_CHARS = re.compile(r"^[A-Za-z0-9._:@+\-]*$")

hostile_text = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, bad, b: a + bad + b, st.text(max_size=10), st.one_of(st.just("\x00"), SURROGATES), st.text(max_size=10)),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "\x00", "😀"]), st.integers(200, 3000)),  # huge within the body limit
    st.sampled_from(["jane.fuzz@example.com", "+436641234567", FCM, "u1", "welcome", "email", "Europe/Vienna", "22:00", ""]),
)
scalar = st.one_of(hostile_text, st.integers(-2**70, 2**70), st.floats(allow_nan=False), st.booleans(), st.none())
json_value = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(hostile_text, inner, max_size=4)), max_leaves=20)


def deep(n: int) -> Any:
    v: Any = "leaf"
    for _ in range(n):
        v = [v]
    return v


def body_of(fields: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """Objects with some of ``fields`` (valid or hostile values), maybe extra keys, or not an object at all."""
    obj = st.fixed_dictionaries({}, optional={k: st.one_of(v, json_value) for k, v in fields.items()})
    with_extra = st.builds(lambda o, extra: {**o, **extra}, obj, st.dictionaries(hostile_text, json_value, max_size=2))
    return st.one_of(obj, with_extra, json_value, st.integers(1, 60).map(lambda n: {"variables": {"v": deep(n)}}))


def strings_in(value: Any) -> list[str]:
    """The string values, less any that is also a key (an unexpected key is named as the field it is, cut to 64
    characters: a value equal to it is then in the answer as that key's name, not as an echo of the value)."""
    keys = set(keys_in(value))
    return [s for s in values_in(value) if s not in keys]


def values_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in values_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in values_in(v)]
    return []


def keys_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(k for v in value.values() for k in keys_in(v))]
    if isinstance(value, list):
        return [k for v in value for k in keys_in(v)]
    return []


def check(r, sent: list[str]) -> None:
    assert r.status_code < 500, f"{r.status_code}: {r.text[:300]}"
    assert "Traceback" not in r.text
    if r.status_code < 400:
        return
    body = r.json()
    assert isinstance(body.get("detail"), str), body
    if r.status_code == 422:
        assert body["code"] in ("invalid_request", "unknown_user")
        assert all(set(e) == {"field", "message"} for e in body["errors"]), body  # FastAPI's `input` echo is gone
    assert "\x00" not in r.text and not re.search(r"\\u(0000|d[89a-f][0-9a-f]{2})", r.text, re.I), r.text[:300]
    for s in sent:  # a value a caller could not have meant as an id is never echoed back
        if len(s) >= 8 and not ID_CHARS.match(s) and s.strip():
            assert s not in r.text, f"echoed {s[:40]!r}: {r.text[:300]}"


def send(api: Api, method: str, path: str, body: Any = None):
    raw = None if body is None else json.dumps(body).encode()  # ensure_ascii: lone surrogates travel as \ud800 escapes
    return api.client.request(method, path, content=raw, headers={**api.auth, "Content-Type": "application/json"})


def path_segment(s: str) -> str:
    return quote(s.encode("utf-8", "surrogatepass"), safe="")


@given(body=body_of({"user_id": st.just("u1"), "template": st.just("welcome"), "channels": st.just(["email"]),
                     "category": st.just("marketing"), "variables": st.just({"name": "Ana"}),
                     "send_at": st.just("2030-01-01T09:00:00+01:00"), "ttl_seconds": st.integers(-5, 10**8)}))
@FUZZ
def test_post_notifications(api: Api, body: Any):
    check(send(api, "POST", "/v1/notifications", body), strings_in(body))


@given(user=hostile_text, body=body_of({"email": st.just("ana@example.com"), "phone": st.just("+436641234567"),
                                        "locale": st.just("de-AT"), "time_zone": st.just("Europe/Vienna"),
                                        "first_name": st.just("Ana")}))
@FUZZ
def test_put_users(api: Api, user: str, body: Any):
    check(send(api, "PUT", f"/v1/users/{path_segment(user) or 'u1'}", body), [user, *strings_in(body)])


@given(body=body_of({"muted": st.booleans(), "channels": st.just({"sms": False}), "categories": st.just({"marketing": False}),
                     "quiet_start": st.just("22:00"), "quiet_end": st.just("07:00")}))
@FUZZ
def test_put_preferences(api: Api, body: Any):
    check(send(api, "PUT", "/v1/users/u1/preferences", body), strings_in(body))


@given(body=body_of({"token": st.just(FCM), "platform": st.sampled_from(["android", "ios", "web"])}))
@FUZZ
def test_post_devices(api: Api, body: Any):
    check(send(api, "POST", "/v1/users/u1/devices", body), strings_in(body))


@given(segment=hostile_text, cursor=hostile_text, limit=hostile_text)
@FUZZ
def test_paths_queries_and_cursors(api: Api, segment: str, cursor: str, limit: str):
    seg = path_segment(segment) or "x"
    query = f"cursor={path_segment(cursor)}&limit={path_segment(limit)}"
    for method, path in [("GET", f"/v1/users/{seg}"), ("GET", f"/v1/users/u1/notifications?{query}"),
                         ("GET", f"/v1/users/{seg}/notifications?cursor={path_segment(cursor)}"),
                         ("GET", f"/v1/notifications/{seg}"), ("DELETE", f"/v1/users/u1/devices/{seg}"),
                         ("GET", f"/v1/users/{seg}/preferences")]:
        check(send(api, method, path), [segment, cursor, limit])
