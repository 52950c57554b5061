"""The APNs sink through its real HTTP/2 client (httpx + h2, TLS with the sandbox's CA, ES256 provider tokens)
against the sandbox's APNs server: one test per error answer, and many streams on one connection."""
from __future__ import annotations

import asyncio
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from schemas.records import Delivery
from sinks.apns import ApnsSink
from sinks.base import Sent
from sinks.errors import InvalidToken, Permanent, RateLimited, Retryable
from sinks.factory import build_apns_sink, build_sink
from tests.support.sandbox import bare_sandbox, delivery  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


def token() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex


def push(address: str | None = None, **over) -> Delivery:
    return Delivery.from_avro(delivery("push", address=address or token(), **over))


def run(sink, ds: list[Delivery]):
    async def go():
        try:
            return await sink.send_batch(ds)
        finally:
            await sink.close()
    return asyncio.run(go())


def test_accepted_notifications_carry_the_apns_headers_and_the_verified_provider_token(bare_sandbox):
    sink = build_apns_sink(bare_sandbox.settings)
    ds = [push(expires_at=1_900_000_000_000), push(lane="bulk")]
    results = run(sink, ds)
    assert all(isinstance(r, Sent) for r in results), results
    inbox = {m["to"]: m for m in bare_sandbox.control.inbox("push")}
    assert set(inbox) == {d.address for d in ds}
    first, bulk = inbox[ds[0].address], inbox[ds[1].address]
    cfg = bare_sandbox.settings.apns
    assert first["provider"] == "apns" and first["topic"] == cfg.topic and first["team_id"] == cfg.team_id
    assert first["push_type"] == "alert" and first["priority"] == "10" and bulk["priority"] == "5"
    assert first["expiration"] == "1900000000" and bulk["expiration"] == "0"
    assert first["collapse_id"] == ds[0].notification_id
    assert first["title"] == ds[0].push_title and first["text"] == ds[0].text
    assert first["data"] == {"kind": "reset", "delivery_id": ds[0].delivery_id}
    assert first["message_id"] == results[0].provider_message_id


def test_many_notifications_travel_as_concurrent_streams_of_one_connection(bare_sandbox):
    bare_sandbox.control.faults("apns", latency_ms=200)
    sink = build_apns_sink(bare_sandbox.settings)
    ds = [push() for _ in range(150)]
    results = run(sink, ds)
    assert all(isinstance(r, Sent) for r in results)
    app = bare_sandbox.sandbox.apns.app
    assert len(app.clients) == 1             # one TCP (TLS) connection
    assert 10 < app.peak <= 100              # many streams at once, never more than the 100 allowed
    assert bare_sandbox.control.requests("apns") == 150


def test_410_unregistered_with_its_timestamp_is_invalid_token(bare_sandbox):
    gone, ok = push(), push()
    bare_sandbox.control.faults("apns", unregistered_tokens=[gone.address])
    results = run(build_apns_sink(bare_sandbox.settings), [gone, ok])
    assert isinstance(results[0], InvalidToken)
    assert "410 Unregistered" in str(results[0]) and "invalid since" in str(results[0])
    assert isinstance(results[1], Sent)
    assert [m["to"] for m in bare_sandbox.control.inbox("push")] == [ok.address]


def test_400_bad_device_token_is_invalid_token(bare_sandbox):
    bad = push()
    bare_sandbox.control.faults("apns", bad_tokens=[bad.address])
    [r] = run(build_apns_sink(bare_sandbox.settings), [bad])
    assert isinstance(r, InvalidToken) and "BadDeviceToken" in str(r)
    assert bare_sandbox.control.inbox("push") == []


def test_403_expired_provider_token_renews_the_token_and_sends_once_more(bare_sandbox):
    sink = build_apns_sink(bare_sandbox.settings)
    d = push()
    bare_sandbox.control.faults("apns", expired_provider_token=1)
    [r] = run(sink, [d])
    assert isinstance(r, Sent)
    assert bare_sandbox.control.requests("apns") == 2          # refused, then the same notification again
    assert sink.token.issued == 2                              # with a new provider token
    [m] = bare_sandbox.control.inbox("push")
    assert m["to"] == d.address


def test_403_expired_twice_is_retryable_after_one_retry_only(bare_sandbox):
    sink = build_apns_sink(bare_sandbox.settings)
    bare_sandbox.control.faults("apns", expired_provider_token=-1)
    [r] = run(sink, [push()])
    assert isinstance(r, Retryable) and "ExpiredProviderToken" in str(r)
    assert bare_sandbox.control.requests("apns") == 2


def test_a_token_signed_with_another_key_is_refused_as_permanent(bare_sandbox):
    cfg = bare_sandbox.settings.apns
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    good = build_apns_sink(bare_sandbox.settings)
    sink = ApnsSink(cfg.url, cfg.key_id, cfg.team_id, cfg.topic, key_pem=pem, ca_file=good._ca_file)
    [r] = run(sink, [push()])
    assert isinstance(r, Permanent) and "InvalidProviderToken" in str(r)
    # and the sandbox really checks the age: a token from more than an hour ago is expired
    old = jwt.encode({"iss": cfg.team_id, "iat": 1_000_000_000}, good.token._key, algorithm="ES256", headers={"kid": cfg.key_id})
    assert bare_sandbox.sandbox.apns.app._check_jwt(old) == "ExpiredProviderToken"


def test_429_too_many_requests_is_rate_limited(bare_sandbox):
    bare_sandbox.control.faults("apns", rate_limit=1, retry_after=2)
    [r] = run(build_apns_sink(bare_sandbox.settings), [push()])
    assert isinstance(r, RateLimited) and "TooManyRequests" in str(r)
    assert r.retry_after == 2.0


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_retryable(bare_sandbox, status):
    bare_sandbox.control.faults("apns", error_rate=1.0, error_status=status)
    [r] = run(build_apns_sink(bare_sandbox.settings), [push()])
    assert isinstance(r, Retryable) and str(status) in str(r)
    assert bare_sandbox.control.requests("apns") == 1   # no retry inside the sink: that is the ladder's job


def test_the_push_channel_sends_ios_tokens_to_apns_and_fcm_tokens_to_fcm_in_one_call(bare_sandbox):
    sink = build_sink(bare_sandbox.settings, "push")
    ios, android = push(), push(address="fcm-" + uuid.uuid4().hex)
    results = run(sink, [android, ios])
    assert all(isinstance(r, Sent) for r in results)
    by_to = {m["to"]: m["provider"] for m in bare_sandbox.control.inbox("push")}
    assert by_to == {ios.address: "apns", android.address: "fcm"}
    assert bare_sandbox.control.stats()["requests"]["apns"] == 1 and bare_sandbox.control.stats()["requests"]["fcm"] == 1
