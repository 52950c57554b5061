"""Hostile input at the API's edge: NUL bytes, lone surrogates, deep nesting, unknown users, unexpected errors.

Each answer is a 4xx in Herald's error body naming the field (never echoing the value), or a 500 with a
request id and no traceback; before the fix these were 500s from PostgreSQL or from encoding the 422 body.
"""
from __future__ import annotations

from datetime import UTC

import pytest

from producers.api import notifications
from producers.api.cursor import encode_cursor
from tests.integration.test_api_http import FCM, Api, api, notify  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

JSON = {"Content-Type": "application/json"}


def refused(r, field: str, *, raw: bytes | None = None) -> dict:
    """The 422 names ``field`` in Herald's body and echoes nothing of the bad value."""
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["code"] == "invalid_request" and body["request_id"] == r.headers["X-Request-Id"]
    assert field in [e["field"] for e in body["errors"]], body
    assert all(set(e) == {"field", "message"} for e in body["errors"])  # no `input`: the value is never echoed
    assert "\\u0000" not in r.text and "\x00" not in r.text and "\\ud800" not in r.text.lower()
    if raw is not None:
        assert raw not in r.content
    return body


def put_user(api: Api, user_id: str, raw: bytes):
    return api.client.put(f"/v1/users/{user_id}", content=raw, headers={**api.auth, **JSON})


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"first_name": "Ana\\u0000Bell"}', "body.first_name"),
        (b'{"email": "ana\\u0000@example.com"}', "body.email"),
        (b'{"first_name": "Ana\\ud800Bell"}', "body.first_name"),  # an unpaired surrogate: no UTF-8 for it
        (b'{"first_name": "\\udfff"}', "body.first_name"),
        (b'{"email": "jane.secret@example.com", "nickname\\u0000": 1}', "body.<key>"),
    ],
)
def test_nul_and_lone_surrogates_in_a_user_body_are_422_naming_the_field(api: Api, db, raw: bytes, field: str):
    refused(put_user(api, "u1", raw), field, raw=b"Bell")
    assert db.execute("SELECT first_name FROM users WHERE id = 'u1'").fetchone() == (None,)  # nothing else lost


def test_a_bad_value_is_never_echoed_in_a_validation_error(api: Api):
    r = put_user(api, "u1", b'{"email": "jane.secret@example"}')
    assert r.status_code == 422 and "body" in r.json()["errors"][0]["field"]
    assert "jane.secret" not in r.text


def test_nul_and_surrogates_in_notification_variables_and_deep_nesting(api: Api):
    for raw, field in [
        (b'{"user_id": "u1", "template": "welcome", "channels": ["email"], "variables": {"a": ["x", "y\\u0000"]}}',
         "body.variables.a[1]"),
        (b'{"user_id": "u1", "template": "welcome", "channels": ["email"], "variables": {"\\ud83d": 1}}', "body.variables.<key>"),
    ]:
        refused(api.client.post("/v1/notifications", content=raw, headers={**api.auth, **JSON}), field)
    deep = b'{"user_id": "u1", "template": "welcome", "channels": ["email"], "variables": {"v": ' + b"[" * 40 + b"]" * 40 + b"}}"
    body = refused(api.client.post("/v1/notifications", content=deep, headers={**api.auth, **JSON}),
                   "body.variables.v" + "[0]" * 30)
    assert "nested deeper" in body["detail"]
    deeper = b"[" * 1500 + b"]" * 1500  # beyond the JSON parser's recursion limit
    refused(api.client.put("/v1/users/u1/preferences", content=deeper, headers={**api.auth, **JSON}), "body")


def test_nul_in_a_path_or_a_query_or_a_cursor_is_422(api: Api):
    api.client.post("/v1/users/u1/devices", json={"platform": "android", "token": FCM}, headers=api.auth)
    refused(api.client.delete("/v1/users/u1/devices/abc%00def", headers=api.auth), "path.token")
    refused(api.client.get("/v1/users/u1/notifications?cursor=ab%00cd", headers=api.auth), "query.cursor")
    from datetime import datetime

    forged = encode_cursor(datetime(2030, 1, 1, tzinfo=UTC), "n\x00x")
    r = api.client.get("/v1/users/u1/notifications", params={"cursor": forged}, headers=api.auth)
    assert r.status_code == 422 and "cursor" in r.json()["detail"]
    assert api.client.delete(f"/v1/users/u1/devices/{FCM}", headers=api.auth).status_code == 204  # the device was untouched


@pytest.mark.parametrize("bad", [b"M1\\ud800.filter1", b"M1\\u0000.filter1"])
def test_a_signed_sendgrid_webhook_with_unstorable_strings_is_400(api: Api, bad: bytes):
    payload = b'[{"email":"a@example.com","timestamp":1700000000,"event":"delivered","sg_message_id":"' + bad + b'"}]'
    r = api.client.post("/v1/webhooks/sendgrid", content=payload, headers=api.signer.headers(payload))
    assert r.status_code == 400, r.text
    assert "[0].sg_message_id" in r.json()["detail"]
    assert api.client.post("/v1/webhooks/sendgrid", content=payload).status_code == 401  # unsigned: still 401


def test_a_signed_twilio_webhook_with_a_nul_is_400(api: Api):
    from twilio.request_validator import RequestValidator

    url = "http://testserver/v1/webhooks/twilio"
    form = {"MessageSid": "SM\x0042", "MessageStatus": "delivered", "AccountSid": "AC1"}
    sig = RequestValidator(api.settings.twilio_auth_token.get_secret_value()).compute_signature(url, form)
    r = api.client.post("/v1/webhooks/twilio", data=form, headers={"X-Twilio-Signature": sig})
    assert r.status_code == 400 and "MessageSid" in r.json()["detail"]


def test_a_notification_for_an_unknown_user_is_422_unknown_user(api: Api):
    r = notify(api, user_id="ghost-7")
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "unknown_user" and "PUT /v1/users/ghost-7" in r.json()["detail"]
    assert api.client.put("/v1/users/ghost-7", json={"email": "ghost@example.com"}, headers=api.auth).status_code == 200
    assert notify(api, user_id="ghost-7").status_code == 202


def test_an_unexpected_error_is_a_500_with_a_request_id_and_no_traceback(api: Api, monkeypatch):
    async def broken(res, code):
        raise RuntimeError("boom in template_channels for jane@example.com")

    monkeypatch.setattr(notifications, "template_channels", broken)
    r = notify(api, headers={"X-Request-Id": "req-123"})
    assert r.status_code == 500
    assert r.headers["X-Request-Id"] == "req-123" and r.json()["request_id"] == "req-123"
    assert r.json()["code"] == "internal_error"
    assert "Traceback" not in r.text and "boom" not in r.text and "jane" not in r.text
    ok = api.client.get("/v1/users/u1", headers=api.auth)
    assert ok.status_code == 200 and len(ok.headers["X-Request-Id"]) == 32  # every answer carries one
