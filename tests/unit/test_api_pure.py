"""Pure parts of the API: keys, validation, rate-limit verdicts, cursors, idempotency hashes, the commit watch."""
from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from producers.api.commit_watch import CommitWatch
from producers.api.cursor import CursorError, decode_cursor, encode_cursor
from producers.api.keys import hash_key, key_from_headers, new_key
from producers.api.models import DeviceIn, NotificationRequest, Preferences, UserUpdate
from producers.api.notification_record import body_hash, to_record
from producers.api.ratelimit import decide
from producers.api.validation import push_token_problem
from schemas.codec import Codec

FCM = "fGx0" + "A" * 120 + ":APA91b" + "-_" * 10


def test_new_keys_are_unique_and_only_their_hash_is_kept():
    a, b = new_key(), new_key()
    assert a.key != b.key and a.key.startswith(f"hk_{a.prefix}_")
    assert a.key_hash == hash_key(a.key) and a.key not in a.key_hash


@pytest.mark.parametrize(
    ("authorization", "x_api_key", "expect"),
    [("Bearer hk_1_x", None, "hk_1_x"), ("bearer  hk_1_x ", None, "hk_1_x"), (None, "hk_1_x", "hk_1_x"),
     ("Basic hk_1_x", None, None), ("Bearer nope", None, None), (None, None, None), ("Bearer " + "hk_" + "x" * 300, None, None)],
)
def test_key_from_headers(authorization, x_api_key, expect):
    assert key_from_headers(authorization, x_api_key) == expect


@pytest.mark.parametrize(
    ("platform", "token", "ok"),
    [("android", FCM, True), ("web", FCM, True), ("ios", "ab" * 32, True), ("ios", FCM, True),
     ("android", "ab" * 32, False), ("ios", "zz" * 32, False), ("android", "short", False),
     ("android", FCM + " ", False), ("windows", FCM, False)],
)
def test_push_tokens_per_platform(platform, token, ok):
    assert (push_token_problem(platform, token) is None) == ok


@pytest.mark.parametrize(
    ("count", "limit", "pttl", "allowed", "retry_after", "remaining"),
    [(1, 10, 1000, True, 0, 9), (10, 10, 500, True, 0, 0), (11, 10, 400, False, 1, 0),
     (11, 10, 2500, False, 3, 0), (11, 10, -1, False, 60, 0)],
)
def test_rate_limit_verdicts(count, limit, pttl, allowed, retry_after, remaining):
    v = decide(count, limit, pttl, 60)
    assert (v.allowed, v.retry_after, v.remaining) == (allowed, retry_after, remaining)


def test_cursor_round_trip_and_garbage():
    at = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert decode_cursor(encode_cursor(at, "n|1")) == (at, "n|1")
    nul = encode_cursor(at, "n\x001")  # a forged cursor: its id would reach PostgreSQL, which refuses NUL
    for bad in ["", "!!!", "bm9zZXA", encode_cursor(at, "x").replace("A", "B") + "x", nul]:
        with pytest.raises(CursorError):
            decode_cursor(bad)


def req(**kw):
    base = {"user_id": "u1", "template": "order_placed", "channels": ["email"]}
    return NotificationRequest.model_validate({**base, **kw})


def test_body_hash_ignores_spelling_but_not_content():
    a = req(variables={"a": 1, "b": 2}, send_at="2030-01-01T10:00:00+01:00")
    b = NotificationRequest.model_validate_json(
        '{"send_at": "2030-01-01T09:00:00Z", "variables": {"b": 2, "a": 1}, "channels": ["email"], "template": "order_placed", "user_id": "u1"}'
    )
    assert body_hash(a) == body_hash(b)
    assert body_hash(a) != body_hash(req(variables={"a": 1, "b": 3}, send_at="2030-01-01T10:00:00+01:00"))


def test_record_is_a_valid_notification_requested():
    r = to_record(req(variables={"name": "Ana"}, send_at="2030-01-01T00:00:00Z", ttl_seconds=60), "nid", 123)
    decoded = Codec().decode(Codec().encode("NotificationRequested", r))
    assert decoded.record["event_id"] == "nid" and decoded.record["variables_json"] == '{"name":"Ana"}'
    assert decoded.record["send_at"] == datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("model", "data", "needle"),
    [
        (NotificationRequest, {"user_id": "u", "template": "t", "channels": ["fax"]}, "unknown channel (known"),
        (NotificationRequest, {"user_id": "u", "template": "t", "channels": ["sms", "sms"]}, "listed twice"),
        (NotificationRequest, {"user_id": "u", "template": "t", "channels": ["sms"], "send_at": "2030-01-01T00:00:00"}, "UTC offset"),
        (NotificationRequest, {"user_id": "u", "template": "t", "channels": ["sms"], "extra": 1}, "extra"),
        (Preferences, {"channels": {"pigeon": False}}, "unknown channel (known"),
        (Preferences, {"quiet_start": "22:00"}, "go together"),
        (UserUpdate, {"email": "not-an-address"}, "email"),
        (UserUpdate, {"phone": "0660123"}, "E.164"),
        (UserUpdate, {"time_zone": "Mars/Olympus"}, "IANA"),
        (UserUpdate, {"locale": None}, "cannot be null"),
        (DeviceIn, {"platform": "ios", "token": "xyz"}, "APNs"),
        (DeviceIn, {"platform": "android", "token": "ab" * 32}, "looks like an APNs device token"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_it(model, data, needle):
    with pytest.raises(ValidationError) as exc:
        model.model_validate(data)
    assert needle in str(exc.value)


def test_commit_watch_flags_only_partitions_with_lag_and_no_progress():
    w = CommitWatch(stall_after=10)
    tp, idle, fresh = ("g", "t", 0), ("g", "t", 1), ("g", "t", 2)
    assert w.observe(0, {tp: (5, 9), idle: (3, 3), fresh: (-1, 4)}) == []
    assert w.observe(9, {tp: (5, 9), idle: (3, 3), fresh: (-1, 4)}) == []
    stalls = w.observe(10, {tp: (5, 9), idle: (3, 3), fresh: (-1, 4)})
    assert [(s.partition, s.lag) for s in stalls] == [(0, 4), (2, 4)]
    # progress resets the clock; catching up clears it
    assert [s.partition for s in w.observe(11, {tp: (6, 9), idle: (3, 3), fresh: (4, 4)})] == []
    assert [s.partition for s in w.observe(20, {tp: (6, 9), idle: (3, 3), fresh: (4, 4)})] == []
    assert [s.partition for s in w.observe(21, {tp: (6, 9), idle: (3, 3), fresh: (4, 4)})] == [0]


def test_the_spec_documents_heralds_422_body_not_fastapis():
    from producers.api import create_api

    spec = create_api().openapi()
    assert "HTTPValidationError" not in str(spec)
    r422 = spec["paths"]["/v1/users/{user_id}"]["put"]["responses"]["422"]
    assert r422["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert "input" not in spec["components"]["schemas"]["FieldError"]["properties"]


def test_openapi_json_has_security_schemes_named_operations_and_one_error_body():
    from fastapi.testclient import TestClient

    from producers.api import create_api

    spec = TestClient(create_api()).get("/openapi.json").json()  # no lifespan: nothing is connected
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": schemes["bearer"]["description"]}
    assert schemes["apiKey"]["type"] == "apiKey" and schemes["apiKey"]["in"] == "header" and schemes["apiKey"]["name"] == "X-API-Key"
    ops = [(path, method, op) for path, operations in spec["paths"].items() for method, op in operations.items()]
    assert len(ops) >= 15
    ids = [op["operationId"] for _, _, op in ops]
    assert len(set(ids)) == len(ids), ids
    # named after what they do, not FastAPI's path-and-method default (put_user_v1_users__user_id__put)
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", i) and "_v1_" not in i for i in ids), ids
    assert {"create_notification", "get_notification", "put_user", "delete_user", "sendgrid_events"} <= set(ids)
    for path, method, op in ops:
        keyed = path.startswith("/v1/") and not path.startswith(("/v1/webhooks/", "/v1/unsubscribe/"))  # signed instead
        assert (op.get("security") == [{"bearer": []}, {"apiKey": []}]) == keyed, (method, path)
        assert "authorization" not in {p["name"].lower() for p in op.get("parameters", [])}, (method, path)
        for status, response in op["responses"].items():
            if status[0] not in "45" or (path in ("/healthz", "/readyz") and status == "503"):  # a probe's 503 is its report
                continue
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status, response)
        assert "500" in op["responses"], (method, path)
    assert set(spec["components"]["schemas"]["ErrorBody"]["required"]) == {"detail", "code"}
