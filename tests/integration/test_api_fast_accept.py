"""POST /v1/notifications' fast path answers as the full FastAPI route does, and hands everything else over."""
from __future__ import annotations

import uuid

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from infra.settings import Settings
from producers.api import create_api
from producers.api.config import ApiConfig
from schemas.codec import Codec
from tests.support.api import make_api_key, read_topic

ANSWER_HEADERS = {"location", "x-trace-id", "x-request-id", "x-ratelimit-limit", "x-ratelimit-remaining",
                  "content-type", "content-length"}


@pytest.fixture
def known(settings: Settings, db: psycopg.Connection) -> str:
    user = f"fast-{uuid.uuid4().hex[:8]}"
    db.execute("INSERT INTO templates (code, channel, version, body_text, active) VALUES ('fast_t', 'email', 1, 'Hi', true)"
               " ON CONFLICT DO NOTHING")
    db.execute("INSERT INTO users (id, email) VALUES (%s, 'f@example.com')", (user,))
    return user


def client_for(settings: Settings, fast: bool, **config: object) -> TestClient:
    return TestClient(create_api(settings, ApiConfig(rate_limit=1000, fast_accept=fast, **config)))  # type: ignore[arg-type]


def fast_count(client: TestClient) -> float:
    return client.app.state.resources.metrics.fast_accepted._value.get()  # type: ignore[attr-defined]


def body(user: str, **extra: object) -> dict[str, object]:
    return {"user_id": user, "template": "fast_t", "channels": ["email"], "variables": {"name": "Ana", "n": [1, 2]}, **extra}


def test_the_fast_path_answers_and_produces_what_the_full_route_does(settings: Settings, known: str):
    key = {"Authorization": f"Bearer {make_api_key(settings)}", "X-Trace-Id": "trace-fast-1", "X-Request-Id": "rid-1"}
    answers = []
    for fast in (True, False):
        with client_for(settings, fast) as client:
            r = client.post("/v1/notifications", json=body(known, send_at="2030-01-01T09:00:00+01:00"), headers=key)
            assert r.status_code == 202, r.text
            assert fast_count(client) == (1 if fast else 0)   # the fast path took it, or was not there
            answers.append(r)
    fast_r, full_r = answers
    assert set(fast_r.headers) >= ANSWER_HEADERS and set(fast_r.headers) == set(full_r.headers)
    for r in answers:
        assert r.json() == {"id": r.json()["id"], "status": "accepted", "trace_id": "trace-fast-1"}
        assert r.headers["location"] == f"/v1/notifications/{r.json()['id']}"
        assert r.headers["x-request-id"] == "rid-1" and r.headers["x-ratelimit-limit"] == "1000"
    records = [Codec().decode(m.value()).record for m in read_topic(settings, settings.topic("events"), 2)]
    by_id = {rec["event_id"]: rec for rec in records}
    fast_rec, full_rec = by_id[fast_r.json()["id"]], by_id[full_r.json()["id"]]
    for rec in (fast_rec, full_rec):
        rec.pop("event_id"), rec.pop("occurred_at")
    assert fast_rec == full_rec and int(fast_rec["send_at"].timestamp()) == 1893484800


@pytest.mark.parametrize("why, change, status", [
    ("no key", {"headers": {}}, 401),
    ("unknown template", {"json": {"template": "nope"}}, 422),
    ("invalid body", {"json": {"channels": ["fax"]}}, 422),
    ("a NUL in a variable", {"json": {"variables": {"a": "x\u0000y"}}}, 422),
    ("unknown user", {"json": {"user_id": "nobody-" + uuid.uuid4().hex[:6]}}, 422),
    ("a critical category without the scope", {"json": {"category": "security"}}, 403),
    ("an invalid X-Trace-Id", {"headers": {"X-Trace-Id": "bad trace"}}, 422),
    ("not JSON", {"content": b"user_id=x", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 422),
])
def test_what_the_fast_path_does_not_take_the_full_route_answers(settings: Settings, known: str, why, change, status):
    auth = {"Authorization": f"Bearer {make_api_key(settings)}"}
    with client_for(settings, True) as client:
        kwargs: dict[str, object] = {"json": {**body(known), **change.get("json", {})}}
        if "content" in change:
            kwargs = {"content": change["content"]}
        headers = auth if "headers" not in change or change["headers"] else {}
        r = client.post("/v1/notifications", headers={**headers, **change.get("headers", {})}, **kwargs)
        assert r.status_code == status, (why, r.text)
        assert "detail" in r.json() and "request_id" in r.json()
        assert fast_count(client) == 0, why


def test_a_request_over_its_rate_is_counted_once_and_refused_by_the_full_route(settings: Settings, known: str):
    key = make_api_key(settings, rate_limit=2)
    with client_for(settings, True, rate_window=30) as client:
        got = [client.post("/v1/notifications", json=body(known), headers={"X-API-Key": key}) for _ in range(3)]
        assert [r.status_code for r in got] == [202, 202, 429]
        assert fast_count(client) == 2
        assert "rate limit of 2 requests" in got[2].json()["detail"] and got[2].headers["Retry-After"]
        res = client.app.state.resources  # type: ignore[attr-defined]
        caller_id = psycopg.connect(settings.dsn).execute("SELECT id FROM api_keys WHERE key_hash = encode(sha256(%s::bytea), 'hex')",
                                                          (key.encode(),)).fetchone()[0]
        counted = redis.Redis.from_url(settings.redis_dsn).get(res.settings.rkey("api-rate", str(caller_id)))
        assert int(counted) == 3   # the refused one counted once: its verdict went along to the full route


def test_an_idempotent_retry_takes_the_fast_path_and_answers_the_same_id(settings: Settings, known: str):
    headers = {"Authorization": f"Bearer {make_api_key(settings)}", "Idempotency-Key": "k-" + uuid.uuid4().hex}
    with client_for(settings, True) as client:
        first = client.post("/v1/notifications", json=body(known), headers=headers)
        again = client.post("/v1/notifications", json=body(known), headers=headers)
        other = client.post("/v1/notifications", json=body(known, variables={"x": 1}), headers=headers)
        assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
        assert other.status_code == 409 and other.json()["code"] == "conflict"
        assert fast_count(client) == 3
