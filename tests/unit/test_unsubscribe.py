"""One-click unsubscribe tokens and headers: signed, expiring, per user and category; only on marketing email."""
from __future__ import annotations

import json
from email import message_from_bytes, policy

import pytest

from infra.settings import Settings
from infra.unsubscribe import ONE_CLICK, TokenError, Unsubscribe, make_token, read_token
from schemas.records import Delivery
from sinks.sendgrid import SendGridSink
from sinks.smtp import build_message
from tests.support.sandbox import delivery

SECRET = b"k" * 32


def test_a_token_names_its_user_and_category_until_it_expires():
    token = make_token(SECRET, "u:42@x", "marketing", 2_000)
    assert read_token(SECRET, token, now=1_999) == ("u:42@x", "marketing")
    with pytest.raises(TokenError, match="expired") as exc:
        read_token(SECRET, token, now=2_001)
    assert exc.value.reason == "expired"


@pytest.mark.parametrize("mangle,reason", [
    (lambda t: make_token(b"other", "u1", "marketing", 2_000), "forged"),
    (lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), "forged"),              # the mac altered
    (lambda t: make_token(SECRET, "u2", "marketing", 2_000).split(".")[0] + "." + t.split(".")[1], "forged"),  # payload swapped
    (lambda t: t.split(".")[0], "malformed"),
    (lambda t: "." + t.split(".")[1], "malformed"),
])
def test_a_forged_altered_or_cut_token_is_refused_naming_why(mangle, reason):
    token = make_token(SECRET, "u1", "marketing", 2_000)
    with pytest.raises(TokenError) as exc:
        read_token(SECRET, mangle(token), now=1_000)
    assert exc.value.reason == reason


def _unsub(**over) -> Unsubscribe:
    return Unsubscribe.from_settings(Settings(metrics_port=0, **over))


def test_headers_only_for_unsubscribable_categories_with_a_link_and_a_mailto():
    u = _unsub(api_port=8123, email_from="Shop <news@shop.example>")
    assert u.headers("u1", "security") is None and u.headers("u1", "transactional") is None
    h = u.headers("u1", "marketing", now=1_000)
    assert h is not None and h["List-Unsubscribe-Post"] == ONE_CLICK
    link, mailto = [p.strip().strip("<>") for p in h["List-Unsubscribe"].split(",")]
    assert link.startswith("http://127.0.0.1:8123/v1/unsubscribe/") and mailto.startswith("mailto:unsubscribe@shop.example?")
    token = link.rsplit("/", 1)[1]
    assert read_token(u.secret, token, now=1_001) == ("u1", "marketing")
    assert read_token(u.secret, token, now=1_000 + 60 * 86400 - 1)
    with pytest.raises(TokenError):
        read_token(u.secret, token, now=1_000 + 60 * 86400 + 1)


def test_settings_choose_the_base_url_the_categories_and_read_the_secret_from_a_file(monkeypatch, tmp_path):
    (tmp_path / "s").write_text("from-a-file\n")
    monkeypatch.setenv("HERALD_UNSUBSCRIBE__SECRET_FILE", str(tmp_path / "s"))
    monkeypatch.setenv("HERALD_UNSUBSCRIBE__BASE_URL", "https://herald.example.com/")
    monkeypatch.setenv("HERALD_UNSUBSCRIBE__CATEGORIES", '["marketing", "newsletter"]')
    u = Unsubscribe.from_settings(Settings(metrics_port=0))
    assert u.secret == b"from-a-file" and u.applies("newsletter")
    h = u.headers("u1", "newsletter")
    assert h is not None and h["List-Unsubscribe"].startswith("<https://herald.example.com/v1/unsubscribe/")


def test_the_sandbox_secret_is_refused_for_links_beyond_loopback(monkeypatch):
    monkeypatch.setenv("HERALD_UNSUBSCRIBE__BASE_URL", "https://herald.example.com")
    with pytest.raises(ValueError, match="HERALD_UNSUBSCRIBE__SECRET"):
        Settings(metrics_port=0)


def test_smtp_marketing_mail_carries_the_rfc_8058_headers_and_transactional_mail_does_not():
    u = _unsub()
    market = Delivery.from_avro(delivery("email", category="marketing", user_id="u9"))
    raw = build_message(market, "Herald <no-reply@herald.local>", u).raw
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["List-Unsubscribe-Post"] == ONE_CLICK
    link = str(msg["List-Unsubscribe"]).split(">")[0].lstrip("<")
    assert read_token(u.secret, link.rsplit("/", 1)[1]) == ("u9", "marketing")
    plain = message_from_bytes(build_message(Delivery.from_avro(delivery("email")), "h@x.org", u).raw, policy=policy.default)
    assert plain["List-Unsubscribe"] is None and plain["List-Unsubscribe-Post"] is None


def test_sendgrid_carries_the_headers_per_personalization_for_marketing_only():
    u = _unsub()
    sink = SendGridSink("SG.test", "http://127.0.0.1:1", "Herald <no-reply@herald.local>", unsubscribe=u)
    ds = [Delivery.from_avro(delivery("email", category="marketing", user_id="u1")),
          Delivery.from_avro(delivery("email", category="security", user_id="u2"))]
    body = json.loads(sink._body(ds, inline=False))
    first, second = body["personalizations"]
    assert first["headers"]["List-Unsubscribe-Post"] == ONE_CLICK and "/v1/unsubscribe/" in first["headers"]["List-Unsubscribe"]
    assert "headers" not in second and "headers" not in body


def test_sendgrid_opt_out_events_are_translated_not_skipped():
    from producers.api.provider_events import OptOut, from_sendgrid

    t = from_sendgrid([
        {"event": "unsubscribe", "sg_message_id": "M.f", "herald_notification_id": "c1:u1", "herald_delivery_id": "d1"},
        {"event": "group_unsubscribe", "sg_message_id": "M.f", "herald_delivery_id": "d2", "asm_group_id": 3},
        {"event": "spamreport", "sg_message_id": "M.f", "herald_notification_id": "n3"},
        {"event": "spamreport", "sg_message_id": "M.f"},   # no Herald id: not Herald's message
        {"event": "delivered", "sg_message_id": "M.f"},
    ], 0)
    assert t.opt_outs == [OptOut("unsubscribe", "c1:u1", "d1"), OptOut("group_unsubscribe", None, "d2"),
                          OptOut("spamreport", "n3", None)]
    assert t.skipped == {"sendgrid:spamreport:no_herald_id": 1} and len(t.receipts) == 1
