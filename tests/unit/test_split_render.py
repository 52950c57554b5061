"""Campaign templates pre-split per chunk give exactly what Jinja gives per recipient, or are not split at all."""
from __future__ import annotations

import pytest

from schemas.vocabulary import Channel
from streams.stages.route.recipient import TEMPLATE_VIEW_KEYS, Recipient
from streams.stages.route.render import render, render_prepared
from streams.stages.route.split import plan, plan_template, prepare_template
from streams.templates import Environments, TemplateSource, compile_template

ENVS = Environments()
RECIPIENTS = [
    Recipient("u1", email="a@example.test", first_name="Ada"),
    Recipient("u2", email="b@example.test", first_name=None),
    Recipient("u3", email="c@example.test", first_name="<b>Tom & \"Jerry\"</b>", locale="de-AT"),
    Recipient("u4", email="d@example.test", first_name="{{ user.id }} \ue000 0 \ue001"),
]
SPLITTABLE = [
    # (text, html)
    ("Hi {{ user.first_name or 'there' }},\n\n{{ headline | default('News') }}\n{% for l in items %}- {{ l }}\n{% endfor %}",
     "<p>Hi {{ user.first_name or 'there' }}</p><ul>{% for l in items %}<li>{{ l }}</li>{% endfor %}</ul>"),
    ("{{ user['first_name'] }} / {{ user.locale }} / {{ notification_id }} / {{ event_id | e }}",
     "<a href=\"https://x.test/u/{{ user.id }}\">{{ user.first_name | e }}</a> {{ headline }}"),
    ("{% if headline %}{{ headline }} for {{ user.first_name }}{% endif %}", None),
    ("no recipient data at all: {{ headline }}", "<p>{{ headline }}</p>"),
]
UNSPLITTABLE = [
    "{% if user.first_name %}Hi {{ user.first_name }}{% endif %}",
    "{{ user.first_name | upper }}",
    "{% set n = user.first_name %}{{ n }}",
    "{% for user in people %}{{ user.first_name }}{% endfor %}",
    "{{ user.first_name or headline }}",
    "{{ user.email }}",    # not in the template view: Jinja must raise it, per recipient
    "{{ user }}",
]


def source(text: str, html: str | None) -> TemplateSource:
    return TemplateSource("weekly_digest", "email", "default", 3, text, subject="For {{ user.first_name or 'you' }}: "
                          "{{ subject | default('digest') }}", body_html=html)


@pytest.mark.parametrize(("text", "html"), SPLITTABLE)
def test_a_split_template_renders_exactly_what_jinja_renders(text: str, html: str | None) -> None:
    tmpl = compile_template(ENVS, source(text, html))
    plans = plan_template(tmpl, TEMPLATE_VIEW_KEYS)
    assert plans is not None
    variables = {"headline": "Spring <sale> & more", "items": ["one", "<two>"], "subject": "S"}
    prepared = prepare_template(plans, {**variables, "event_type": "CampaignMessage"})
    assert prepared is not None
    for r in RECIPIENTS:
        eid = f"c1:{r.id}"
        context = {**variables, "user": r.template_view(), "event_id": eid, "event_type": "CampaignMessage",
                   "notification_id": eid}
        assert render_prepared(tmpl, Channel.EMAIL, prepared, r.template_view(), {"event_id": eid, "notification_id": eid}) \
            == render(tmpl, Channel.EMAIL, context)


@pytest.mark.parametrize("text", UNSPLITTABLE)
def test_a_template_that_uses_recipient_data_otherwise_is_not_split(text: str) -> None:
    assert plan(ENVS.text, text, TEMPLATE_VIEW_KEYS) is None
    assert plan_template(compile_template(ENVS, source(text, None)), TEMPLATE_VIEW_KEYS) is None


def test_a_variable_holding_the_marker_characters_is_not_split() -> None:
    split = plan(ENVS.text, "{{ headline }} {{ user.first_name }}", TEMPLATE_VIEW_KEYS)
    assert split is not None
    from streams.stages.route.split import prepare
    assert prepare(split, {"headline": "\ue0000\ue001"}) is None
    assert prepare(split, {"headline": "fine"}) is not None


def test_a_render_error_of_the_shared_part_leaves_each_recipient_to_jinja() -> None:
    tmpl = compile_template(ENVS, source("{{ missing_variable }} {{ user.first_name }}", None))
    plans = plan_template(tmpl, TEMPLATE_VIEW_KEYS)
    assert plans is not None and prepare_template(plans, {}) is None
