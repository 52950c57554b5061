"""Templates: sandbox, strict undefined, autoescape, locale fallback, SMS segments, the compiled cache."""
from __future__ import annotations

import pytest
from markupsafe import Markup

from infra.tools.seed import SEED_TEMPLATES
from streams.routes import load_routes
from streams.stages.route.render import Rendered, RenderFailure, render, sms_segments
from streams.stores.templates import TemplateStore
from streams.templates import Environments, TemplateSource, compile_template, locale_chain, money, safe_url

ENVS = Environments()


def t(text: str, channel: str = "sms", **kw) -> object:
    return compile_template(ENVS, TemplateSource("c", channel, "default", 1, text, **kw))


@pytest.mark.parametrize("text, context, reason, names", [
    ("Hi {{ name }}", {}, "render_error", "'name' is undefined"),
    ("{{ order.total }}", {"order": {}}, "render_error", "no attribute 'total'"),
    ("{{ ''.__class__.__mro__ }}", {}, "template_security", "__class__"),
    ("{{ x.__globals__ }}", {"x": money}, "template_security", "__globals__"),
    ("{% for i in range(10**9) %}{% endfor %}", {}, "render_error", "OverflowError"),
    ("{{ items.append(1) }}", {"items": []}, "template_security", "append"),
    ("{{ 1 / 0 }}", {}, "render_error", "ZeroDivisionError"),
    ("{% if x %}", {}, "render_error", "syntax error"),
    ("{{ '' }}", {}, "render_error", "rendered empty"),
])
def test_render_failures_are_reported_never_empty(text, context, reason, names):
    out = render(t(text), "sms", context)
    assert isinstance(out, RenderFailure) and out.reason == reason and names in out.message, out


def test_the_parts_of_a_message_share_the_variables_and_globals_but_not_their_own_assignments():
    # the parts render on one shared context: a part's {% set %} stays its own, and the caller's dict is untouched
    tmpl = t("{% set x = 'T' %}{{ x }}{% for i in range(2) %}{{ i }}{% endfor %}", "email", subject="{{ who }}")
    context = {"who": "Ada"}
    assert render(tmpl, "email", context) == Rendered(text="T01", subject="Ada")
    assert context == {"who": "Ada"}
    leaky = t("{% set x = 'T' %}{{ x }}", "email", subject="{{ x }}")
    out = render(leaky, "email", {})
    assert isinstance(out, RenderFailure) and "(subject): missing variable: 'x' is undefined" in out.message, out
    # a variable named like a global is the event's, as with Jinja's own render
    assert render(t("{{ range }}"), "sms", {"range": "r"}).text == "r"


def test_missing_template_is_its_own_reason():
    assert render(None, "push", {}).reason == "no_template"


def test_email_html_is_escaped_text_is_not_and_a_subject_is_required():
    out = render(t("Hi {{ n }}", "email", subject="S {{ n }}", body_html="<p>{{ n }}</p>"), "email", {"n": "<b>&"})
    assert out == Rendered(text="Hi <b>&", subject="S <b>&", html="<p>&lt;b&gt;&amp;</p>")
    assert render(t("Hi", "email"), "email", {}).reason == "render_error"


def test_push_gets_title_and_data_sms_gets_segments():
    out = render(t("body", "push", push_title="T {{ a }}"), "push", {"a": 1}, {"k": "v"})
    assert (out.push_title, out.push_data, out.sms_segments) == ("T 1", {"k": "v"}, 0)
    assert render(t("x" * 161), "sms", {}).sms_segments == 2


@pytest.mark.parametrize("text, segments", [
    ("", 0), ("a" * 160, 1), ("a" * 161, 2), ("a" * 306, 2), ("a" * 307, 3),
    ("€" * 80, 1), ("€" * 81, 2),                 # extension characters count two septets
    ("ä" * 160, 1),                               # in the GSM-7 basic set
    ("ł" * 70, 1), ("ł" * 71, 2), ("ł" * 134, 2), ("ł" * 135, 3),   # UCS-2
    ("😀" * 35, 1), ("😀" * 36, 2),               # surrogate pairs count two units
])
def test_sms_segments(text, segments):
    assert sms_segments(text) == segments


@pytest.mark.parametrize("locale, chain", [
    ("de-AT", ["de-AT", "de", "default"]), ("de_AT", ["de-AT", "de", "default"]), ("en", ["en", "default"]),
    ("", ["default"]), (None, ["default"]), ("zh-Hant-TW", ["zh-Hant-TW", "zh-Hant", "zh", "default"]),
])
def test_locale_chain(locale, chain):
    assert locale_chain(locale) == chain


def test_store_picks_by_fallback_and_compiles_each_version_once():
    store = TemplateStore(refresh_seconds=60)
    codes = sorted({s.code for s in SEED_TEMPLATES})
    store.load_rows(codes, list(SEED_TEMPLATES))
    assert store.pick("order_confirmation", "email", "de-AT").source.locale == "de"
    assert store.pick("order_confirmation", "email", "fr").source.locale == "default"
    assert store.pick("password_reset", "sms", "en") is None
    first = store.pick("order_confirmation", "sms", "en")
    store.load_rows(codes, list(SEED_TEMPLATES))
    assert store.pick("order_confirmation", "sms", "en") is first          # same version: not recompiled
    v2 = TemplateSource("order_confirmation", "sms", "default", 2, "v2 {{ order_id }}")
    store.load_rows(["order_confirmation"], [v2])                           # a newly activated version replaces it
    assert store.pick("order_confirmation", "sms", "en").source.version == 2
    assert store.pick("order_confirmation", "email", "en") is None          # a reload holds exactly the active rows
    assert store.stale({"order_confirmation"}) == [] and store.stale({"other"}) == ["other"]


def test_every_routed_template_is_seeded_for_each_of_its_channels():
    seeded = {(s.code, s.channel) for s in SEED_TEMPLATES if s.locale == "default"}
    for route in load_routes().routes.values():
        for ch in route.channels:
            assert (route.template, ch) in seeded, (route.event_type, ch)


def test_seed_templates_render_with_sample_events():
    from tests.unit.test_route_stage import ORDER
    store = TemplateStore()
    store.load_rows(sorted({s.code for s in SEED_TEMPLATES}), list(SEED_TEMPLATES))
    for loc in ("en", "de"):
        for ch in ("email", "sms", "push"):
            out = render(store.pick("order_confirmation", ch, loc), ch, {**ORDER, "user": {"first_name": "Ada"}})
            assert isinstance(out, Rendered), out


def test_money():
    assert (money(4550), money(-5, "USD"), money(0)) == ("45.50 EUR", "-0.05 USD", "0.00 EUR")


# --- safe links: the url filter ----------------------------------------------------------------

@pytest.mark.parametrize("value, shown", [
    ("https://example.test/reset?t=1&u=2", "https://example.test/reset?t=1&u=2"),
    ("http://example.test", "http://example.test"),
    ("HTTPS://EXAMPLE.TEST/", "HTTPS://EXAMPLE.TEST/"),
    ("mailto:help@example.test", "mailto:help@example.test"),
    ("  https://example.test/\n", "https://example.test/"),       # what a browser strips, stripped
    ("https://exa\tmple.test/", "https://example.test/"),
    ("javascript:alert(1)", "#"),
    ("JavaScript:alert(1)", "#"),
    (" JAVASCRIPT:alert(1)", "#"),
    ("java\tscript:alert(1)", "#"),
    ("java\nscr\ript:alert(1)", "#"),
    ("\x00\x1fjavascript:alert(1)", "#"),
    ("vbscript:msgbox(1)", "#"),
    ("data:text/html;base64,PHNjcmlwdD4=", "#"),
    ("file:///etc/passwd", "#"),
    ("//evil.test/x", "#"),                                         # no scheme: an email has no base URL
    ("reset", "#"),
    ("", "#"),
    (None, "#"),
])
def test_url_filter_allows_only_http_https_and_mailto(value, shown):
    assert safe_url(value) == shown


def test_url_filter_output_is_still_escaped_in_html():
    out = render(t("x", "email", subject="s", body_html='<a href="{{ u | url }}">x</a>'), "email",
                 {"u": Markup('https://x.test/"onmouseover="alert(1)')})
    assert out.html == '<a href="https://x.test/&#34;onmouseover=&#34;alert(1)">x</a>' and out.warnings == ()


@pytest.mark.parametrize("locale", ["en", "de"])
@pytest.mark.parametrize("link", ["javascript:alert(document.cookie)", " JaVaScRiPt:alert(1)", "java\tscript:alert(1)"])
def test_seed_password_reset_never_puts_a_javascript_link_in_an_href(locale, link):
    store = TemplateStore()
    store.load_rows(["password_reset"], [s for s in SEED_TEMPLATES if s.code == "password_reset"])
    out = render(store.pick("password_reset", "email", locale), "email",
                 {"reset_url": link, "expires_in_minutes": 30, "user": {"first_name": "Ada"}})
    assert isinstance(out, Rendered), out
    assert 'href="#"' in out.html and "script" not in out.html.lower()
    assert len(out.warnings) == 1 and "unsafe_url" in out.warnings[0]


def test_seed_password_reset_keeps_a_real_link():
    store = TemplateStore()
    store.load_rows(["password_reset"], [s for s in SEED_TEMPLATES if s.code == "password_reset"])
    out = render(store.pick("password_reset", "email", "en"), "email",
                 {"reset_url": "https://id.example.test/reset?t=a&u=b", "expires_in_minutes": 30, "user": {}})
    assert 'href="https://id.example.test/reset?t=a&amp;u=b"' in out.html and out.warnings == ()


def test_every_seed_href_goes_through_the_url_filter():
    import re
    for s in SEED_TEMPLATES:
        for href in re.findall(r'href="([^"]*)"', s.body_html or ""):
            assert re.fullmatch(r"\{\{ *\w+(\.\w+)* *\| *url *\}\}", href), (s.code, s.locale, href)


# --- bounded work: a request's variables must not make a seed template build gigabytes -------------------------

def test_a_string_price_times_a_huge_quantity_is_refused_not_built():
    """order_confirmation multiplies price by quantity; a request's variables can make the price a string."""
    store = TemplateStore()
    store.load_rows(["order_confirmation"], [s for s in SEED_TEMPLATES if s.code == "order_confirmation"])
    ctx = {"order_id": "o", "currency": "EUR", "total_cents": 1, "user": {"first_name": ""},
           "items": [{"name": "a", "quantity": 10**9, "unit_price_cents": "x"}]}   # was 2 GB and 12 s of CPU
    out = render(store.pick("order_confirmation", "email", "en"), "email", ctx)
    assert isinstance(out, RenderFailure) and out.reason == "template_security" and "'*' would repeat a str" in out.message


@pytest.mark.parametrize("text, context, expect", [
    ("{{ 'ab' * 3 }}", {}, "ababab"),
    ("{{ n * 'x' }}", {"n": 100_000}, "x" * 100_000),
    ("{{ 3 * 4 }}|{{ 2 ** 10 }}", {}, "12|1024"),
    ("{{ s * n }}", {"s": "ab", "n": 10**6}, "template_security"),
    ("{{ l * n }}", {"l": [1], "n": 10**8}, "template_security"),
    ("{{ x ** y }}", {"x": 7, "y": 10**7}, "template_security"),
])
def test_repetition_and_powers_are_bounded(text, context, expect):
    out = render(t(text), "sms", context)
    assert (out.reason if isinstance(out, RenderFailure) else out.text) == expect
