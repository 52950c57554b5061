"""Every provider error maps onto Herald's taxonomy, through the REAL SDKs talking to the sandbox servers."""
from __future__ import annotations

import asyncio

import pytest

from schemas.records import Delivery
from sinks.base import Sent
from sinks.errors import InvalidAddress, InvalidToken, Permanent, ProviderRejected, RateLimited, Retryable
from sinks.factory import build_sink
from tests.support.sandbox import bare_sandbox, delivery  # noqa: F401 - fixture

CHANNEL = {"smtp": "email", "sendgrid": "email", "twilio": "sms", "fcm": "push"}
BAD_ADDRESS = {"smtp": "no-at-sign", "sendgrid": "no-at-sign", "twilio": "12345", "fcm": "x"}


def send(sandbox, provider: str, ds):
    s = sandbox.settings.model_copy(update={"email_provider": provider} if CHANNEL[provider] == "email" else {})
    if provider == "fcm":   # the FCM sink alone, without the push dispatcher in front (APNs: tests/integration/test_apns_sink.py)
        s = s.model_copy(update={"apns": s.apns.model_copy(update={"enabled": False})})
    sink = build_sink(s, CHANNEL[provider])
    assert sink.provider == provider

    async def go():
        try:
            return await sink.send_batch([Delivery.from_avro(d) for d in ds])  # the builders make Avro dicts
        finally:
            await sink.close()

    return asyncio.run(go())


@pytest.mark.parametrize("provider", ["smtp", "sendgrid", "twilio", "fcm"])
def test_accepted_messages_are_sent_with_the_provider_message_id(bare_sandbox, provider):
    ds = [delivery(CHANNEL[provider]) for _ in range(5)]
    results = send(bare_sandbox, provider, ds)
    assert all(isinstance(r, Sent) and r.provider_message_id for r in results)
    inbox = bare_sandbox.control.inbox(CHANNEL[provider])
    assert sorted(m["to"] for m in inbox) == sorted(d["address"] for d in ds)
    # each address got the message the sink reported, under that id (SendGrid: one id for the request's messages)
    assert sorted((m["to"], m["message_id"]) for m in inbox) == sorted(
        (d["address"], r.provider_message_id) for d, r in zip(ds, results, strict=True))


@pytest.mark.parametrize("provider", ["smtp", "sendgrid", "twilio", "fcm"])
def test_5xx_is_retryable(bare_sandbox, provider):
    bare_sandbox.control.faults(provider, storm=-1)
    results = send(bare_sandbox, provider, [delivery(CHANNEL[provider]) for _ in range(3)])
    assert all(isinstance(r, Retryable) for r in results), results
    assert bare_sandbox.control.inbox(CHANNEL[provider]) == []


@pytest.mark.parametrize("provider", ["sendgrid", "twilio", "fcm"])
def test_429_is_rate_limited_with_the_servers_retry_after(bare_sandbox, provider):
    bare_sandbox.control.faults(provider, rate_limit=1, retry_after=7)
    [r] = send(bare_sandbox, provider, [delivery(CHANNEL[provider])])
    assert isinstance(r, RateLimited) and r.retry_after == 7


@pytest.mark.parametrize("provider", ["smtp", "sendgrid", "twilio", "fcm"])
def test_invalid_address_is_permanent_and_spoils_nothing_else_in_the_batch(bare_sandbox, provider):
    good = [delivery(CHANNEL[provider]) for _ in range(3)]
    bad = delivery(CHANNEL[provider], address=BAD_ADDRESS[provider])
    results = send(bare_sandbox, provider, [good[0], bad, *good[1:]])
    assert isinstance(results[1], InvalidAddress) and not isinstance(results[1], InvalidToken)
    assert all(isinstance(r, Sent) for i, r in enumerate(results) if i != 1), results
    assert sorted(m["to"] for m in bare_sandbox.control.inbox(CHANNEL[provider])) == sorted(d["address"] for d in good)


def test_fcm_unregistered_token_is_invalid_token(bare_sandbox):
    gone, ok = delivery("push"), delivery("push")
    bare_sandbox.control.faults("fcm", unregistered_tokens=[gone["address"]])
    results = send(bare_sandbox, "fcm", [gone, ok])
    assert isinstance(results[0], InvalidToken) and isinstance(results[1], Sent)


def test_twilio_number_flagged_invalid_is_permanent(bare_sandbox):
    d = delivery("sms", address="+4366099999999")
    bare_sandbox.control.faults("twilio", invalid_numbers=[d["address"]])
    [r] = send(bare_sandbox, "twilio", [d])
    assert isinstance(r, Permanent) and "21211" in str(r)


def test_fcm_does_not_spend_seconds_retrying_5xx_itself(bare_sandbox):
    bare_sandbox.control.faults("fcm", storm=-1)
    [r] = send(bare_sandbox, "fcm", [delivery("push")])
    assert isinstance(r, Retryable)
    assert bare_sandbox.control.requests("fcm") == 1  # one request: the SDK's own retry ladder is off


def test_unreachable_provider_is_retryable(bare_sandbox):
    s = bare_sandbox.settings.model_copy(update={"email_provider": "sendgrid", "sendgrid_host": "http://127.0.0.1:9"})
    sink = build_sink(s, "email")
    [r] = asyncio.run(sink.send_batch([Delivery.from_avro(delivery("email"))]))
    assert isinstance(r, Retryable)


def test_sendgrid_batches_up_to_1000_personalizations_per_request(bare_sandbox):
    ds = [delivery("email") for _ in range(1500)]
    results = send(bare_sandbox, "sendgrid", ds)
    assert all(isinstance(r, Sent) for r in results)
    assert bare_sandbox.control.requests("sendgrid") == 2
    inbox = {m["to"]: m for m in bare_sandbox.control.inbox("email")}
    assert len(inbox) == 1500
    # each personalization got its own rendered text through substitutions
    assert all(inbox[d["address"]]["text"] == d["text"] and inbox[d["address"]]["html"] == d["html"] for d in ds)


@pytest.mark.parametrize("status", [401, 403])
def test_sendgrid_refusing_the_api_key_or_the_account_is_provider_rejected(bare_sandbox, status):
    bare_sandbox.control.faults("sendgrid", error_rate=1.0, error_status=status)
    results = send(bare_sandbox, "sendgrid", [delivery("email") for _ in range(2)])
    assert all(isinstance(r, ProviderRejected) and f"sendgrid {status}" in str(r) for r in results), results


@pytest.mark.parametrize("code, kind", [(535, ProviderRejected), (530, ProviderRejected), (550, Permanent),
                                        (451, Retryable)])
def test_an_smtp_reply_refusing_the_login_is_provider_rejected_and_others_keep_their_class(code, kind):
    from sinks.smtp import _by_code

    result = _by_code(code, b"5.7.8 Authentication credentials invalid", "smtp error")
    assert type(result) is kind
