"""One delivery's content never fails its chunk: through the REAL SDKs against the sandbox, a bad header, address
or body is that delivery's own Permanent result, and the rest are sent and reported truthfully (issue 11)."""
from __future__ import annotations

import pytest

from schemas.vocabulary import SENDGRID_DELIVERY_ARG, SENDGRID_NOTIFICATION_ARG
from sinks.base import Sent
from sinks.errors import InvalidAddress, Permanent
from tests.support.sandbox import bare_sandbox, delivery  # noqa: F401 - fixture
from tests.unit.test_sinks_errors import CHANNEL, send

# per provider: one hostile value, and the field its reason must name
HOSTILE = {
    "smtp": ({"subject": "Hello\r\nBcc: everyone@example.org"}, "subject"),
    "sendgrid": ({"subject": "Hello\r\nBcc: everyone@example.org"}, "subject"),
    "twilio": ({"text": "code 1234\x00"}, "text"),
    "fcm": ({"push_title": "Security\r\nalert"}, "push title"),
}


def _chunk_with_one_bad(provider: str, bad: dict, n: int = 9, at: int = 4) -> list[dict]:
    ds = [delivery(CHANNEL[provider]) for _ in range(n)]
    ds[at] = delivery(CHANNEL[provider], **bad)
    return ds


@pytest.mark.parametrize("provider", ["smtp", "sendgrid", "twilio", "fcm"])
def test_a_hostile_value_fails_only_its_own_delivery(bare_sandbox, provider):
    over, field = HOSTILE[provider]
    ds = _chunk_with_one_bad(provider, over)
    results = send(bare_sandbox, provider, ds)
    assert isinstance(results[4], Permanent) and field in str(results[4]), results[4]
    good = [d for i, d in enumerate(ds) if i != 4]
    assert all(isinstance(r, Sent) and r.provider_message_id for i, r in enumerate(results) if i != 4), results
    inbox = bare_sandbox.control.inbox(CHANNEL[provider])
    assert sorted(m["to"] for m in inbox) == sorted(d["address"] for d in good)
    assert {m["message_id"] for m in inbox} == {r.provider_message_id for i, r in enumerate(results) if i != 4}


def test_smtp_chunk_records_each_sent_message_under_its_own_delivery(bare_sandbox):
    ds = _chunk_with_one_bad("smtp", HOSTILE["smtp"][0])
    results = send(bare_sandbox, "smtp", ds)
    by_delivery = {m["delivery_id"]: m for m in bare_sandbox.control.inbox("email")}
    assert set(by_delivery) == {d["delivery_id"] for i, d in enumerate(ds) if i != 4}
    for d, r in zip(ds, results, strict=True):
        if d["delivery_id"] in by_delivery:
            assert by_delivery[d["delivery_id"]]["message_id"] == r.provider_message_id
            assert by_delivery[d["delivery_id"]]["subject"] == d["subject"]
    assert "line break" in str(results[4])


@pytest.mark.parametrize("provider", ["smtp", "sendgrid"])
@pytest.mark.parametrize("address", ["a b@example.org", "a@example.org\r\nBcc: b@example.org",
                                     "a@example.org, b@example.org", "<a@example.org>", "a@@example.org", "@example.org"])
def test_an_address_that_is_not_one_mailbox_is_invalid_and_spoils_nothing(bare_sandbox, provider, address):
    ds = _chunk_with_one_bad(provider, {"address": address}, n=3, at=1)
    results = send(bare_sandbox, provider, ds)
    assert isinstance(results[1], InvalidAddress) and "invalid address" in str(results[1]), results[1]
    assert isinstance(results[0], Sent) and isinstance(results[2], Sent), results
    assert sorted(m["to"] for m in bare_sandbox.control.inbox("email")) == sorted([ds[0]["address"], ds[2]["address"]])


def test_smtp_non_ascii_address_without_smtputf8_is_invalid_and_the_rest_are_sent(bare_sandbox):
    # the sandbox does not offer SMTPUTF8: before, smtplib's refusal was taken for a lost connection and the
    # rest of the chunk was reported Retryable (and sent again later)
    ds = _chunk_with_one_bad("smtp", {"address": "jürgen@example.org"}, n=3, at=1)
    results = send(bare_sandbox, "smtp", ds)
    assert isinstance(results[1], InvalidAddress) and "SMTPUTF8" in str(results[1])
    assert isinstance(results[0], Sent) and isinstance(results[2], Sent), results


def test_sendgrid_leaves_a_bad_delivery_out_of_the_one_request(bare_sandbox):
    ds = _chunk_with_one_bad("sendgrid", HOSTILE["sendgrid"][0])
    send(bare_sandbox, "sendgrid", ds)
    assert bare_sandbox.control.requests("sendgrid") == 1


@pytest.mark.parametrize("tag", ["-herald-text-", "-herald-html-"])
def test_sendgrid_template_output_holding_substitution_tags_reaches_each_recipient_as_rendered(bare_sandbox, tag):
    ds = [
        delivery("email", subject=f"Hi {tag}", text=f"text of a {tag} -herald-html- end",
                 html=f"<p>html of a {tag} -herald-text-</p>"),
        delivery("email", subject="Plain", text="plain text", html="<p>plain html</p>"),
        delivery("email", subject="-herald-text--herald-html-", text="-herald-html-", html="-herald-text-"),
    ]
    results = send(bare_sandbox, "sendgrid", ds)
    assert all(isinstance(r, Sent) for r in results), results
    inbox = {m["to"]: m for m in bare_sandbox.control.inbox("email")}
    for d in ds:
        got = inbox[d["address"]]
        assert (got["subject"], got["text"], got["html"]) == (d["subject"], d["text"], d["html"])
        assert got["custom_args"] == {SENDGRID_DELIVERY_ARG: d["delivery_id"], SENDGRID_NOTIFICATION_ARG: d["notification_id"]}


def test_twilio_body_over_1600_characters_is_permanent_without_a_call(bare_sandbox):
    ds = _chunk_with_one_bad("twilio", {"text": "x" * 1601}, n=3, at=1)
    results = send(bare_sandbox, "twilio", ds)
    assert isinstance(results[1], Permanent) and "1600" in str(results[1])
    assert isinstance(results[0], Sent) and isinstance(results[2], Sent)
    assert bare_sandbox.control.requests("twilio") == 2


@pytest.mark.parametrize("over, why", [({"push_data": {"from": "x"}}, "reserved"),
                                       ({"push_data": {"google.x": "y"}}, "reserved"),
                                       ({"text": "x" * 5000}, "4096"),
                                       ({"address": "tok en with spaces"}, "device token")])
def test_fcm_message_it_cannot_carry_fails_alone(bare_sandbox, over, why):
    ds = _chunk_with_one_bad("fcm", over, n=3, at=1)
    results = send(bare_sandbox, "fcm", ds)
    assert isinstance(results[1], Permanent) and why in str(results[1]), results[1]
    assert isinstance(results[0], Sent) and isinstance(results[2], Sent), results
    assert bare_sandbox.control.requests("fcm") == 2


def test_twilio_number_with_whitespace_is_invalid_without_a_call_and_multiline_bodies_are_fine(bare_sandbox):
    ds = [delivery("sms", text="line one\r\nline two\n\tend"), delivery("sms", address="+43 660 1234567"),
          delivery("sms", address="+4366012345679")]
    results = send(bare_sandbox, "twilio", ds)
    assert isinstance(results[1], InvalidAddress) and "phone number" in str(results[1])
    assert isinstance(results[0], Sent) and isinstance(results[2], Sent), results
    assert bare_sandbox.control.requests("twilio") == 2
    assert {m["text"] for m in bare_sandbox.control.inbox("sms")} >= {"line one\r\nline two\n\tend"}
