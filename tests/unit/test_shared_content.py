"""Campaign chunks carry a template's shared parts once and each recipient's slot values (DeliveryChunk v2):
every delivery comes back byte for byte what Jinja rendered, and SendGrid gets one request for the chunk."""
from __future__ import annotations

import json
from typing import Any

import pytest

from infra.tools.sandbox.http import _subst
from schemas.codec import Codec
from schemas.records import Delivery, SharedContent, chunk_deliveries, chunk_record, unshare
from schemas.vocabulary import Channel, Lane
from sinks.base import Sent
from sinks.content import check_body
from sinks.errors import Permanent
from sinks.sendgrid import JSON_UTF8, MAX_SUBSTITUTION_BYTES, SendGridSink
from streams.stages.route.chunks import approx_size
from streams.stages.route.recipient import TEMPLATE_VIEW_KEYS, Recipient
from streams.stages.route.render import Rendered, RenderFailure, render, render_prepared, render_shared
from streams.stages.route.split import plan_template, prepare_template, shared_content, slot_values
from streams.templates import CompiledTemplate, TemplateSource, compile_template
from tests.support.sandbox import delivery
from tests.unit.test_split_render import ENVS, RECIPIENTS, SPLITTABLE

VARIABLES = {"headline": "Spring <sale> & more", "items": ["one", "<two>"], "subject": "S"}
EDGES = [
    # a slot at a part's very start or end, or with only whitespace before it: that part travels whole
    ("{{ user.first_name or 'there' }}, welcome", "<p>Hi {{ user.first_name }}</p>\n  {{ user.first_name }}"),
    ("  \n{{ user.first_name }} and news", "<p>{{ headline }}</p>"),
]


def compiled(text: str, html: str | None, subject: str = "For {{ user.first_name or 'you' }}: {{ subject }}",
             ) -> CompiledTemplate:
    return compile_template(ENVS, TemplateSource("weekly_digest", "email", "default", 3, text, subject=subject,
                                                 body_html=html))


def campaign(tmpl: CompiledTemplate, recipients: list[Recipient],
             variables: dict[str, Any] = VARIABLES) -> tuple[list[Delivery], list[Delivery], SharedContent | None]:
    """(each recipient's Delivery as Jinja renders it, the same with the chunk's shared content, that content)."""
    plans = plan_template(tmpl, TEMPLATE_VIEW_KEYS)
    assert plans is not None
    prepared = prepare_template(plans, {**variables, "event_type": "CampaignMessage"})
    assert prepared is not None
    content = shared_content(prepared)
    whole, shared = [], []
    for r in recipients:
        eid = f"c1:{r.id}"
        ids = {"event_id": eid, "notification_id": eid}
        rendered = render(tmpl, Channel.EMAIL, {**variables, "user": r.template_view(), "event_type": "CampaignMessage",
                                                **ids})
        assert isinstance(rendered, Rendered)
        for out in (whole, shared):
            d = Delivery.from_avro(delivery(lane="bulk", campaign_id="c1", occurred_at=1_700_000_000_000, event_id=eid,
                                            user_id=r.id, address=r.email, subject=rendered.subject, text=rendered.text,
                                            html=rendered.html))
            if out is shared and content is not None:
                d.shared, d.slot_values = content, slot_values(prepared, content, r.template_view(), ids)
            out.append(d)
    return whole, shared, content


def round_trip(codec: Codec, ds: list[Delivery]) -> tuple[dict[str, Any], list[Delivery]]:
    record = codec.decode(codec.encode("DeliveryChunk", chunk_record("c1/0", ds))).record
    return record, chunk_deliveries(record)


@pytest.mark.parametrize(("text", "html"), SPLITTABLE + EDGES)
def test_a_shared_chunk_gives_back_exactly_what_jinja_rendered_and_the_whole_chunk_gives(text: str, html: str | None,
                                                                                        ) -> None:
    codec = Codec()
    whole, shared, content = campaign(compiled(text, html), RECIPIENTS)
    assert content is not None   # the subject at least: it starts and ends with literal text
    record, back = round_trip(codec, shared)
    assert record["shared"] is not None
    _, v1 = round_trip(codec, whole)
    # byte for byte the Delivery each was and the v1 chunk gives (times come back as datetimes: same millis)
    expected = [codec.encode("Delivery", {**d.to_avro(), "lane": Lane.BULK}) for d in whole]
    assert [codec.encode("Delivery", b.to_avro()) for b in back] == expected
    assert [codec.encode("Delivery", b.to_avro()) for b in v1] == expected
    # and each keeps the content and its own values, for a provider that can send the content once
    assert all(b.shared == content and b.slot_values == d.slot_values for b, d in zip(back, shared, strict=True))


def test_only_the_parts_a_strip_cannot_reach_are_shared() -> None:
    _, _, content = campaign(compiled(*EDGES[0]), RECIPIENTS[:1])
    assert content is not None and content.text is None and content.html is None and content.subject is not None
    _, _, content = campaign(compiled(*EDGES[1]), RECIPIENTS[:1])
    assert content is not None and content.text is None and content.html == ("<p>Spring &lt;sale&gt; &amp; more</p>",)


def test_a_shared_chunk_carries_the_html_once() -> None:
    codec = Codec()
    tmpl = compiled(SPLITTABLE[0][0], SPLITTABLE[0][1] + "<table>" + "x" * 30_000 + "</table>")
    people = [Recipient(f"u{i}", email=f"u{i}@example.test", first_name=f"N{i}") for i in range(50)]
    whole, shared, _ = campaign(tmpl, people)
    v1, v2 = (len(codec.encode("DeliveryChunk", chunk_record("c1/0", ds))) for ds in (whole, shared))
    assert v1 > 50 * 30_000 and v2 < 40_000
    assert max(approx_size(d) for d in shared) < 500   # the packing counts values, so 1000 fit one record
    assert sum(approx_size(d) for d in shared) + shared[0].shared.size() >= v2 - 200  # type: ignore[union-attr]


def test_slot_values_that_do_not_fit_the_shared_parts_are_refused() -> None:
    codec = Codec()
    _, shared, _ = campaign(compiled(*SPLITTABLE[0]), RECIPIENTS[:1])
    record = codec.decode(codec.encode("DeliveryChunk", chunk_record("c1/0", shared))).record
    record["slots"][0].pop()
    with pytest.raises(ValueError, match="slot values"):
        chunk_deliveries(record)


# --- SendGrid ---------------------------------------------------------------------------------------------------

class _Response:
    def __init__(self) -> None:
        self.headers = {"X-Message-Id": "m-1"}


class _Client:
    """Stands in for the SDK's ``client.mail.send``: keeps each request body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.client = self
        self.mail = self
        self.send = self

    def post(self, request_body: str, request_headers: dict[str, str]) -> _Response:
        # the sink writes the JSON itself: the SDK passes it on only under a content type other than exactly JSON's,
        # as ``request_body.encode("utf-8")``, which it formats into a debug message whether that is logged or not
        assert request_headers == {"Content-Type": JSON_UTF8}
        payload = request_body.encode("utf-8")
        assert isinstance(payload, bytes) and f"PAYLOAD: {payload}" == f"PAYLOAD: <{len(payload)} bytes of JSON>"
        self.bodies.append(json.loads(payload))
        return _Response()


def sink() -> tuple[SendGridSink, _Client]:
    s = SendGridSink("SG.test", "http://127.0.0.1:1", "Herald <no-reply@herald.local>")
    client = _Client()
    s._sg = client  # type: ignore[assignment]
    return s, client


def received(body: dict[str, Any]) -> list[tuple[str, str, str, str | None]]:
    """(address, subject, text, html) of each personalization, as SendGrid (the sandbox) makes them."""
    content = {c["type"]: c["value"] for c in body["content"]}
    out = []
    for p in body["personalizations"]:
        subs = p.get("substitutions") or {}
        assert sum(len(k.encode()) + len(v.encode()) for k, v in subs.items()) <= MAX_SUBSTITUTION_BYTES
        out.append((p["to"][0]["email"], _subst(p["subject"], subs), _subst(content["text/plain"], subs),
                    _subst(content["text/html"], subs) if "text/html" in content else None))
    return out


def delivered(codec: Codec, ds: list[Delivery]) -> list[Delivery]:
    return round_trip(codec, ds)[1]


@pytest.mark.parametrize(("text", "html"), SPLITTABLE + EDGES)
def test_a_shared_chunk_is_one_sendgrid_request_that_gives_each_recipient_its_own_email(text: str, html: str | None,
                                                                                       ) -> None:
    codec = Codec()
    people = [*RECIPIENTS, Recipient("u5", email="e@example.test", first_name="-herald-")]
    _, shared, _ = campaign(compiled(text, html), people)
    ds = delivered(codec, shared)
    s, client = sink()
    assert s._send_all(ds) == [Sent("m-1")] * len(ds)
    [body] = client.bodies
    assert received(body) == [(d.address, d.subject, d.text, d.html) for d in ds]


def test_a_thousand_recipients_of_a_30kb_newsletter_are_one_request() -> None:
    codec = Codec()
    tmpl = compiled(SPLITTABLE[0][0], SPLITTABLE[0][1] + "<table>" + "<tr><td>story</td></tr>" * 1400 + "</table>")
    people = [Recipient(f"u{i}", email=f"u{i}@example.test", first_name=f"Name {i} <&>") for i in range(1000)]
    _, shared, _ = campaign(tmpl, people)
    ds = delivered(codec, shared)
    assert all(len(d.html or "") > 30_000 for d in ds)
    s, client = sink()
    assert s._send_all(ds) == [Sent("m-1")] * 1000
    [body] = client.bodies
    assert len(body["personalizations"]) == 1000
    assert received(body) == [(d.address, d.subject, d.text, d.html) for d in ds]


def test_a_recipient_whose_values_are_over_the_substitution_limit_is_sent_the_old_way() -> None:
    codec = Codec()
    people = [Recipient("u1", email="a@example.test", first_name="Ada"),
              Recipient("u2", email="b@example.test", first_name="Z" * 6000)]
    _, shared, _ = campaign(compiled(*SPLITTABLE[0]), people)
    ds = delivered(codec, shared)
    s, client = sink()
    assert s._send_all(ds) == [Sent("m-1")] * 2
    assert len(client.bodies) == 2
    got = {r[0]: r for body in client.bodies for r in received(body)}
    assert [got[d.address] for d in ds] == [(d.address, d.subject, d.text, d.html) for d in ds]


def test_a_refused_character_in_one_recipients_values_refuses_that_recipient_only_with_the_whole_bodys_message() -> None:
    codec = Codec()
    people = [Recipient("u1", email="a@example.test", first_name="Ada"),
              Recipient("u2", email="b@example.test", first_name="Bad\x00name")]
    _, shared, _ = campaign(compiled(*SPLITTABLE[0], subject="News"), people)
    ds = delivered(codec, shared)
    s, client = sink()
    ok, refused = s._send_all(ds)
    assert ok == Sent("m-1") and isinstance(refused, Permanent)
    with pytest.raises(Permanent) as whole:
        check_body("text", ds[1].text)
    assert str(refused) == str(whole.value) and f"position {ds[1].text.index(chr(0))}" in str(refused)
    [body] = client.bodies
    assert [p["to"][0]["email"] for p in body["personalizations"]] == ["a@example.test"]


@pytest.mark.parametrize(("text", "html"), SPLITTABLE + EDGES)
def test_render_shared_checks_what_render_checks_and_leaves_the_shared_parts_to_the_values(text: str, html: str | None,
                                                                                          ) -> None:
    tmpl = compiled(text, html)
    plans = plan_template(tmpl, TEMPLATE_VIEW_KEYS)
    assert plans is not None
    prepared = prepare_template(plans, {**VARIABLES, "event_type": "CampaignMessage"})
    assert prepared is not None
    content = shared_content(prepared)
    assert content is not None
    lone = Recipient("u9", email="z@example.test", first_name="\ud800")
    for r in [*RECIPIENTS, lone]:
        eid = f"c1:{r.id}"
        ids = {"event_id": eid, "notification_id": eid}
        expected = render_prepared(tmpl, Channel.EMAIL, prepared, r.template_view(), ids)
        got = render_shared(tmpl, prepared, content, r.template_view(), ids)
        if isinstance(expected, RenderFailure):
            assert isinstance(got, RenderFailure) and got.reason == expected.reason == "render_error"
            continue
        assert not isinstance(got, RenderFailure)
        rendered, values = got
        d = Delivery.from_avro(delivery(subject=rendered.subject, text=rendered.text, html=rendered.html))
        d.shared, d.slot_values = content, values
        unshare(d)
        assert (d.subject, d.text, d.html) == (expected.subject, expected.text, expected.html)


def test_an_empty_shared_text_is_refused_as_render_refuses_it() -> None:
    tmpl = compiled("{{ nothing | default('') }}", "<p>{{ user.first_name }}!</p>")
    plans = plan_template(tmpl, TEMPLATE_VIEW_KEYS)
    assert plans is not None
    prepared = prepare_template(plans, {**VARIABLES, "event_type": "CampaignMessage"})
    assert prepared is not None
    content = shared_content(prepared)
    assert content is not None and content.text == ("",)
    got = render_shared(tmpl, prepared, content, RECIPIENTS[0].template_view(), {"event_id": "e", "notification_id": "e"})
    assert isinstance(got, RenderFailure) and "the text part rendered empty" in got.message
