"""Whatever a template renders, building one delivery's message either works or is that delivery's DeliveryError."""
from __future__ import annotations

import contextlib
from email import message_from_bytes, policy

from hypothesis import given, settings, strategies as st

from schemas.records import Delivery
from sinks.errors import DeliveryError
from sinks.fcm import build_message as fcm_message
from sinks.sendgrid import _tags
from sinks.smtp import build_message as smtp_message
from tests.support.sandbox import delivery

TEXT = st.text(st.characters(codec="utf-8"), max_size=80) | st.sampled_from(
    ["a\r\nBcc: x@y.org", "\x00", "\u2028", "-herald-text-", "=?utf-8?q?x?=", "a" * 2000])


@settings(max_examples=300, deadline=None)
@given(subject=TEXT, address=TEXT, text=TEXT, html=TEXT)
def test_smtp_message_is_built_or_refused_and_a_built_one_keeps_its_subject(subject, address, text, html):
    d = delivery("email", subject=subject, address=address or "x@example.org", text=text, html=html or None)
    try:
        raw = smtp_message(Delivery.from_avro(d), "Herald <no-reply@herald.local>").raw
    except DeliveryError:
        return
    back = message_from_bytes(raw, policy=policy.default)
    if "=?" not in subject:   # text shaped like an RFC 2047 encoded word is decoded by every reader
        assert str(back["Subject"]) == subject.strip() or not subject.strip()
    assert back.get_all("Bcc") is None
    assert back["X-Herald-Delivery-Id"] == d["delivery_id"] and back["To"] is not None

    def same(body: str | None) -> str:
        return (body or "").replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")

    parsed_text, parsed_html = back.get_body(("plain",)), back.get_body(("html",))
    assert parsed_text is not None and same(parsed_text.get_content()) == same(text)
    assert same(parsed_html.get_content() if parsed_html is not None else None) == same(html)


@settings(max_examples=200, deadline=None)
@given(title=TEXT, text=TEXT, key=TEXT, value=TEXT)
def test_fcm_message_is_built_or_refused(title, text, key, value):
    d = delivery("push", push_title=title or None, text=text, push_data={key: value})
    with contextlib.suppress(DeliveryError):
        fcm_message(Delivery.from_avro(d))


@given(st.lists(st.tuples(TEXT, TEXT, TEXT), min_size=1, max_size=5))
def test_sendgrid_tags_occur_nowhere_in_the_content(parts):
    ds = [delivery("email", subject=s, text=t, html=h) for s, t, h in parts]
    text_tag, html_tag = _tags([Delivery.from_avro(d) for d in ds])
    for d in ds:
        for v in (d["subject"], d["text"], d["html"], d["delivery_id"], d["notification_id"]):
            assert text_tag not in v and html_tag not in v
