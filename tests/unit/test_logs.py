"""Logs are JSON with the trace id, and never carry an address, number, token or secret, nor a prefix of one."""
from __future__ import annotations

import base64
import json
import logging

import pytest

from infra.logs import JsonFormatter, logging_config, mask, register_secrets, trace_id_var

FCM = "dGhpcyBpcyBhIGZha2UgZmNtIHRva2VuIGZvciB0ZXN0cw:APA91bH7xK2mN9pQ4rS6tU8vW0yZ3aB5cD7eF9gH1iJ3kL5"
SENDGRID = "SG.Zq7xKp2LmN4vB8wR1tYc3d.Hf6Gj9Ks2Lq5Wx8Zb1Nc4Vm7Rt0Yp3Ua6Ie9Oo2Pq5"
TWILIO = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"
HERALD_KEY = "hk_1a2b3c4d_Qx9vT3mZpL7wK2sR8nY4bH6dF1gJ5cV0eU3iO7aS9t"
PASSWORD = "s3cr3t-Pa55w0rd"
BASIC = base64.b64encode(f"ACsid0000:{TWILIO}".encode()).decode()


def no_prefix_of(secret: str, text: str, shortest: int = 4) -> bool:
    return not any(secret[:n] in text for n in range(shortest, len(secret) + 1))


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("sent to jane.doe@example.com", "jane.doe@example.com"),
        ("GET /v1/users/jane@example.com HTTP/1.1 200", "jane@example.com"),
        ('127.0.0.1:5 - "GET /v1/users/jane.doe%40example.com HTTP/1.1" 200', "jane.doe"),
        ('127.0.0.1:5 - "GET /v1/users/%2B436641234567 HTTP/1.1" 404', "436641234567"),
        ("sms to +436641234567 ok", "+436641234567"),
        ("GET /v1/users/+436641234567 HTTP/1.1", "+436641234567"),
        (f"push to {FCM} failed", FCM),
        ("apns token " + "a1" * 32, "a1" * 32),
        (f"HEADERS: {{'Authorization': 'Bearer {SENDGRID}', 'Accept': 'application/json'}}", SENDGRID),
        (f"key {SENDGRID} rejected", SENDGRID),
        (f"twilio auth_token={TWILIO}", TWILIO),
        ("Authorization: Basic " + BASIC, BASIC),
        (f"X-API-Key: {HERALD_KEY}", HERALD_KEY),
        (f"caller {HERALD_KEY} over its rate", HERALD_KEY),
        (f"connect postgresql://herald:{PASSWORD}@db:5432/herald failed", PASSWORD),
        (f"dsn host=db user=herald password={PASSWORD} dbname=herald", PASSWORD),
        (f"redis://:{PASSWORD}@127.0.0.1:6379/0", PASSWORD),
    ],
)
def test_mask_leaves_no_prefix(text: str, secret: str) -> None:
    masked = mask(text)
    assert no_prefix_of(secret, masked), masked


def test_mask_keeps_what_operators_need() -> None:
    assert mask("sent to jane.doe@example.com") == "sent to [email]@example.com"
    assert mask("sms to +436641234567 ok") == "sms to [phone] ok"
    # Herald's own ids (uuid4 hex event, notification and delivery ids) stay readable
    assert mask("order o-123 for 2 items, event 0f1e2d3c4b5a69788796a5b4c3d2e1f0") == \
        "order o-123 for 2 items, event 0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    assert mask("File streams/stages/route_stage_recipient_lookup_helpers.py") == \
        "File streams/stages/route_stage_recipient_lookup_helpers.py"
    # the same token masks the same way, so log lines about one device can be matched
    assert mask(FCM) == mask(FCM) and mask(FCM).startswith("[token len=")


def test_a_registered_secret_is_masked_whatever_its_shape() -> None:
    register_secrets(["plain-looking-value-7"])
    assert mask("using plain-looking-value-7 now") == "using [secret] now"


def test_json_line_carries_the_trace_id_and_masks() -> None:
    record = logging.LogRecord("herald.deliver", logging.WARNING, __file__, 1, "bounce from %s", ("ann@example.org",), None)
    token = trace_id_var.set("trace-42")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        trace_id_var.reset(token)
    assert line["trace_id"] == "trace-42"
    assert line["msg"] == "bounce from [email]@example.org"
    assert line["level"] == "warning" and line["logger"] == "herald.deliver"


def test_exceptions_are_masked_too() -> None:
    try:
        raise ValueError(f"bad key {SENDGRID} for ann@example.org")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert no_prefix_of(SENDGRID, line["error"]) and "ann@example.org" not in line["error"]


def test_uvicorn_loggers_go_through_the_json_root_handler() -> None:
    config = logging_config("info")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        assert config["loggers"][name] == {"level": "INFO", "handlers": [], "propagate": True}
    assert config["handlers"]["stderr"]["formatter"] == "json"


def test_the_settings_secrets_are_registered_for_masking() -> None:
    from pydantic import SecretStr

    from infra.logs import settings_secrets
    from infra.settings import Settings

    s = Settings(sendgrid_api_key=SecretStr("SG.abc.def"), twilio_auth_token=SecretStr(TWILIO),
                 database_url=SecretStr(f"postgresql://herald:{PASSWORD}@db:5432/herald"))
    found = settings_secrets(s)
    assert {"SG.abc.def", TWILIO, PASSWORD} <= set(found)
    logging_config("info", s)
    assert mask(f"token is {TWILIO}") == "token is [secret]"  # a bare 32-hex token, known only by value
