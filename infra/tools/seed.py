"""Seed data: the templates of every shipped route and of campaigns, and demo users.

Idempotent: a template (code, channel, locale) that already has a version is
left alone, so re-seeding never overrides what an operator changed.
"""
from __future__ import annotations

import psycopg

from streams.templates import TemplateSource

_ORDER_TEXT_EN = """Hi {{ user.first_name or "there" }},

thank you for your order {{ order_id }}.

{% for item in items %}
- {{ item.quantity }} x {{ item.name }}: {{ (item.unit_price_cents * item.quantity) | money(currency) }}
{% endfor %}

Total: {{ total_cents | money(currency) }}
{% if shipping_address %}
Ships to: {{ shipping_address.line1 }}, {{ shipping_address.postal_code }} {{ shipping_address.city }}
{% endif %}
"""

_ORDER_HTML_EN = """<p>Hi {{ user.first_name or "there" }},</p>
<p>thank you for your order <b>{{ order_id }}</b>.</p>
<ul>
{% for item in items %}
  <li>{{ item.quantity }} &times; {{ item.name }}: {{ (item.unit_price_cents * item.quantity) | money(currency) }}</li>
{% endfor %}
</ul>
<p>Total: <b>{{ total_cents | money(currency) }}</b></p>
{% if shipping_address %}
<p>Ships to: {{ shipping_address.line1 }}, {{ shipping_address.postal_code }} {{ shipping_address.city }}</p>
{% endif %}
"""

_ORDER_TEXT_DE = """Hallo {{ user.first_name or "" }},

danke für deine Bestellung {{ order_id }}.

{% for item in items %}
- {{ item.quantity }} x {{ item.name }}: {{ (item.unit_price_cents * item.quantity) | money(currency) }}
{% endfor %}

Summe: {{ total_cents | money(currency) }}
"""

_ORDER_HTML_DE = """<p>Hallo {{ user.first_name or "" }},</p>
<p>danke für deine Bestellung <b>{{ order_id }}</b>.</p>
<ul>
{% for item in items %}
  <li>{{ item.quantity }} &times; {{ item.name }}: {{ (item.unit_price_cents * item.quantity) | money(currency) }}</li>
{% endfor %}
</ul>
<p>Summe: <b>{{ total_cents | money(currency) }}</b></p>
"""

SEED_TEMPLATES: tuple[TemplateSource, ...] = (
    # OrderPlaced → order_confirmation (transactional)
    TemplateSource("order_confirmation", "email", "default", 1, _ORDER_TEXT_EN,
                   subject="Your order {{ order_id }} is confirmed", body_html=_ORDER_HTML_EN),
    TemplateSource("order_confirmation", "email", "de", 1, _ORDER_TEXT_DE,
                   subject="Deine Bestellung {{ order_id }} ist bestätigt", body_html=_ORDER_HTML_DE),
    TemplateSource("order_confirmation", "sms", "default", 1,
                   "Order {{ order_id }} confirmed: {{ items | length }} item(s), {{ total_cents | money(currency) }}."),
    TemplateSource("order_confirmation", "sms", "de", 1,
                   "Bestellung {{ order_id }} bestätigt: {{ items | length }} Artikel, {{ total_cents | money(currency) }}."),
    TemplateSource("order_confirmation", "push", "default", 1,
                   "{{ items | length }} item(s), {{ total_cents | money(currency) }}", push_title="Order {{ order_id }} confirmed"),
    TemplateSource("order_confirmation", "push", "de", 1,
                   "{{ items | length }} Artikel, {{ total_cents | money(currency) }}", push_title="Bestellung {{ order_id }} bestätigt"),
    # UserFollowed → new_follower (social)
    TemplateSource("new_follower", "push", "default", 1, "{{ follower_name }} started following you.", push_title="New follower"),
    TemplateSource("new_follower", "push", "de", 1, "{{ follower_name }} folgt dir jetzt.", push_title="Neuer Follower"),
    TemplateSource("new_follower", "email", "default", 1,
                   "Hi {{ user.first_name or 'there' }},\n\n{{ follower_name }} started following you.",
                   subject="{{ follower_name }} is now following you",
                   body_html="<p>Hi {{ user.first_name or 'there' }},</p><p><b>{{ follower_name }}</b> started following you.</p>"),
    # PasswordResetRequested → password_reset (security: bypasses preferences and quiet hours)
    TemplateSource("password_reset", "email", "default", 1,
                   "Someone asked to reset your password. Use this link within {{ expires_in_minutes }} minutes:\n{{ reset_url }}\n\n"
                   "If it was not you, ignore this message.",
                   subject="Reset your password",
                   body_html="<p>Someone asked to reset your password.</p>"
                             "<p><a href=\"{{ reset_url | url }}\">Reset it</a> within {{ expires_in_minutes }} minutes.</p>"
                             "<p>If it was not you, ignore this message.</p>"),
    TemplateSource("password_reset", "email", "de", 1,
                   "Jemand möchte dein Passwort zurücksetzen. Dieser Link gilt {{ expires_in_minutes }} Minuten:\n{{ reset_url }}",
                   subject="Passwort zurücksetzen",
                   body_html="<p><a href=\"{{ reset_url | url }}\">Passwort zurücksetzen</a> (gültig {{ expires_in_minutes }} Minuten)</p>"),
    # BirthdayReached → birthday_greeting (social)
    TemplateSource("birthday_greeting", "email", "default", 1,
                   "Happy birthday, {{ user.first_name or 'friend' }}!{% if age %} {{ age }} looks good on you.{% endif %}",
                   subject="Happy birthday!",
                   body_html="<h1>Happy birthday, {{ user.first_name or 'friend' }}!</h1>"),
    TemplateSource("birthday_greeting", "push", "default", 1, "Have a wonderful day, {{ user.first_name or 'friend' }}!",
                   push_title="Happy birthday!"),
    TemplateSource("birthday_greeting", "email", "de", 1,
                   "Alles Gute zum Geburtstag, {{ user.first_name or '' }}!", subject="Alles Gute!",
                   body_html="<h1>Alles Gute zum Geburtstag, {{ user.first_name or '' }}!</h1>"),
    # campaigns (CampaignMessage → weekly_digest, marketing)
    TemplateSource("weekly_digest", "email", "default", 1,
                   "Hi {{ user.first_name or 'there' }},\n\n{{ headline | default('Here is what happened this week.') }}\n"
                   "{% for line in highlights | default([]) %}\n- {{ line }}\n{% endfor %}",
                   subject="{{ subject | default('Your weekly digest') }}",
                   body_html="<p>Hi {{ user.first_name or 'there' }},</p><p>{{ headline | default('Here is what happened this week.') }}</p>"
                             "<ul>{% for line in highlights | default([]) %}<li>{{ line }}</li>{% endfor %}</ul>"),
    TemplateSource("weekly_digest", "push", "default", 1, "{{ headline | default('Your weekly digest is here.') }}",
                   push_title="Weekly digest"),
)

INSERT_TEMPLATE = """
INSERT INTO templates (code, channel, locale, version, subject, body_text, body_html, push_title, active)
SELECT %(code)s, %(channel)s, %(locale)s, %(version)s, %(subject)s, %(body_text)s, %(body_html)s, %(push_title)s,
       NOT EXISTS (SELECT 1 FROM templates WHERE code = %(code)s AND channel = %(channel)s AND locale = %(locale)s AND active)
WHERE NOT EXISTS (SELECT 1 FROM templates WHERE code = %(code)s AND channel = %(channel)s AND locale = %(locale)s)
"""


def seed_templates(conn: psycopg.Connection) -> int:
    """Insert (and activate) the seed templates that have no version yet; returns how many were inserted."""
    n = 0
    with conn.transaction():
        for t in SEED_TEMPLATES:
            cur = conn.execute(INSERT_TEMPLATE, {
                "code": t.code, "channel": t.channel, "locale": t.locale, "version": t.version, "subject": t.subject,
                "body_text": t.body_text, "body_html": t.body_html, "push_title": t.push_title,
            })
            n += cur.rowcount
    return n


_FIRST = ("Ada", "Grace", "Linus", "Jürgen", "Zoë", "Mia", "Noah", "Emil", "Lena", "Omar")
_LOCALES = ("en", "de", "de-AT", "en-GB", "fr")
_ZONES = ("Europe/Berlin", "Europe/Vienna", "UTC", "America/New_York", "Asia/Tokyo")


def demo_user_id(prefix: str, i: int) -> str:
    return f"{prefix}-{i:06d}"


def seed_demo_users(conn: psycopg.Connection, n: int, prefix: str = "demo", devices: bool = True) -> list[str]:
    """Upsert ``n`` demo users (email, phone, locale, zone; an active device each when ``devices``); returns their ids."""
    ids = [demo_user_id(prefix, i) for i in range(n)]
    with conn.transaction():
        with conn.cursor() as cur:
            cur.execute(
                """
                INSERT INTO users (id, email, phone, locale, time_zone, first_name)
                SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[])
                ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, phone = EXCLUDED.phone, locale = EXCLUDED.locale,
                    time_zone = EXCLUDED.time_zone, first_name = EXCLUDED.first_name, updated_at = now()
                """,
                (ids, [f"{u}@example.test" for u in ids], [f"+1555{i:07d}" for i in range(n)],
                 [_LOCALES[i % len(_LOCALES)] for i in range(n)], [_ZONES[i % len(_ZONES)] for i in range(n)],
                 [_FIRST[i % len(_FIRST)] for i in range(n)]),
            )
            if devices:
                cur.execute(
                    """
                    INSERT INTO devices (user_id, token, platform)
                    SELECT * FROM unnest(%s::text[], %s::text[], %s::text[])
                    ON CONFLICT (token) DO NOTHING
                    """,
                    (ids, [f"tok-{u}" for u in ids], [("android", "ios", "web")[i % 3] for i in range(n)]),
                )
    return ids
