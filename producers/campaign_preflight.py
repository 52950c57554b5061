"""Pre-flight: what a campaign would do, checked before anything is produced.

One pass over the recipients counts them, looks up the locale of every known
user (one statement per ``LOOKUP_BATCH`` ids) and keeps a sample: the first
recipients, plus the first of every locale. Then:

* the template code must have an active version, for every channel, in the
  locale fallback chain of every locale the recipients use;
* the sample must render (a missing variable names itself);
* the count and a duration estimate are reported.

The template rules are the route stage's own (``streams.templates``: the
sandboxed environments, ``locale_chain``; ``streams.stages.route.render``):
the producers may import them (same layer, neither the worker runtime nor the
handlers), so pre-flight and the workers cannot disagree.
"""
from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg

from producers.campaign import CampaignSpec, event_id
from producers.campaign_source import Recipient
from producers.lines import Rejected
from streams.stages.route.recipient import Recipient as Profile
from streams.stages.route.render import RenderFailure, render
from streams.templates import CompiledTemplate, Environments, TemplateSource, compile_template, locale_chain

LOOKUP_BATCH = 10_000
FIRST_SAMPLE = 20            # the first recipients rendered, before the first one of each further locale
UNKNOWN_LOCALE = "(unknown user)"

TEMPLATE_SQL = """
SELECT code, channel, locale, version, body_text, subject, body_html, push_title
FROM templates WHERE active AND code = %s
"""
LOCALES_SQL = "SELECT locale, count(*), min(id) FROM users WHERE id = ANY(%s::text[]) GROUP BY locale"
PROFILES_SQL = "SELECT id, locale, time_zone, first_name FROM users WHERE id = ANY(%s::text[])"
_UNDEFINED = re.compile(r"'([^']+)' is undefined")


class PreflightError(ValueError):
    """The campaign would fail: ``kind`` is no_template, no_locale or missing_variable (``variable`` names it)."""

    def __init__(self, kind: str, message: str, variable: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.variable = variable


@dataclass
class Preflight:
    total: int = 0
    rejected: list[Rejected] = field(default_factory=list)   # the first 1000 lines that name no recipient
    rejected_count: int = 0
    locales: Counter[str] = field(default_factory=Counter)    # recipient locale → recipients (unknown users apart)
    unknown_users: int = 0                                    # not in ``users``: skipped downstream (no_recipient)
    templates: dict[str, str] = field(default_factory=dict)  # "channel/locale" used → the template version's label
    sampled: int = 0
    estimate_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"recipients": self.total, "rejected_lines": self.rejected_count, "unknown_users": self.unknown_users,
                "locales": dict(self.locales), "templates": self.templates, "sampled": self.sampled,
                "estimate_seconds": round(self.estimate_seconds, 3)}

    def summary(self) -> str:
        locales = ", ".join(f"{loc} {n:,}" for loc, n in self.locales.most_common(6))
        return (f"{self.total:,} recipients ({locales or 'no known user'}"
                + (f"; {self.unknown_users:,} unknown users will be skipped" if self.unknown_users else "")
                + f"); {self.sampled} rendered; about {duration(self.estimate_seconds)} to deliver")


def duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def active_templates(conn: psycopg.Connection, code: str) -> list[TemplateSource]:
    return [TemplateSource(*row) for row in conn.execute(TEMPLATE_SQL, (code,))]


def _known_codes(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT DISTINCT code FROM templates WHERE active ORDER BY 1 LIMIT 1000")]


def pick(compiled: dict[tuple[str, str], CompiledTemplate], channel: str, locale: str | None) -> CompiledTemplate | None:
    """The route stage's choice: the first locale of the fallback chain with an active version."""
    for loc in locale_chain(locale):
        if (found := compiled.get((channel, loc))) is not None:
            return found
    return None


def context(spec: CampaignSpec, r: Recipient, profile: Profile) -> dict[str, Any]:
    """What the route stage renders a campaign message with (``template_context`` of a CampaignMessage)."""
    eid = event_id(spec.id, r.user_id)
    return {**spec.variables, **(r.variables or {}), "user": profile.template_view(), "event_id": eid,
            "event_type": "CampaignMessage", "notification_id": eid}


def _batches(items: Iterable[Recipient | Rejected], pf: Preflight) -> Iterator[list[Recipient]]:
    batch: list[Recipient] = []
    for item in items:
        if isinstance(item, Rejected):
            pf.rejected_count += 1
            if len(pf.rejected) < 1000:
                pf.rejected.append(item)
            continue
        batch.append(item)
        if len(batch) >= LOOKUP_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def check(conn: psycopg.Connection, spec: CampaignSpec, recipients: Iterable[Recipient | Rejected],
          delivery_rate: float, sample_size: int = FIRST_SAMPLE) -> Preflight:
    """Pre-flight ``spec`` over ``recipients`` (read once); raises ``PreflightError`` naming the first problem."""
    sources = active_templates(conn, spec.template)
    if not sources:
        close = difflib.get_close_matches(spec.template, _known_codes(conn), n=3)
        hint = f"; did you mean {' or '.join(close)}?" if close else "; `herald templates list` shows the templates"
        raise PreflightError("no_template", f"no active template '{spec.template}'{hint}")
    envs = Environments()
    compiled = {(s.channel, s.locale): compile_template(envs, s) for s in sources}
    for channel in spec.channels:
        if not any(ch == channel for ch, _ in compiled):
            raise PreflightError("no_template", f"template '{spec.template}' has no active {channel} version "
                                                f"(it has {', '.join(sorted({ch for ch, _ in compiled}))})")

    pf = Preflight()
    sample: list[Recipient] = []
    sampled_locales: set[str] = set()
    for batch in _batches(recipients, pf):
        pf.total += len(batch)
        known = 0
        firsts: dict[str, str] = {}
        for locale, n, first in conn.execute(LOCALES_SQL, ([r.user_id for r in batch],)):
            pf.locales[locale] += n
            known += n
            firsts[locale] = first
        pf.unknown_users += len({r.user_id for r in batch}) - known
        if len(sample) < sample_size:
            sample += batch[: sample_size - len(sample)]
        in_sample = {r.user_id for r in sample}
        for locale, first in firsts.items():
            if locale not in sampled_locales:
                sampled_locales.add(locale)
                if first not in in_sample:
                    sample += [r for r in batch if r.user_id == first][:1]

    for channel in spec.channels:
        for locale, n in pf.locales.items():
            tmpl = pick(compiled, channel, locale)
            if tmpl is None:
                chain = " → ".join(locale_chain(locale))
                raise PreflightError("no_locale", f"template '{spec.template}' has no active {channel} version for "
                                                  f"locale {locale} ({chain}), which {n:,} recipients use")
            pf.templates[f"{channel}/{locale}"] = tmpl.label

    profiles = {row[0]: Profile(id=row[0], locale=row[1], time_zone=row[2], first_name=row[3])
                for row in conn.execute(PROFILES_SQL, (list({r.user_id for r in sample}),))}
    for r in sample:
        profile = profiles.get(r.user_id)
        if profile is None:
            continue   # skipped downstream: nothing to render
        for channel in spec.channels:
            tmpl = pick(compiled, channel, profile.locale)
            got = render(tmpl, channel, context(spec, r, profile))
            if isinstance(got, RenderFailure):
                missing = _UNDEFINED.search(got.message)
                if missing:
                    raise PreflightError("missing_variable", f"template {tmpl.label if tmpl else spec.template} needs "
                                         f"variable '{missing[1]}', which neither the campaign's variables nor recipient "
                                         f"{r.user_id}'s give", missing[1])
                raise PreflightError("render_error", f"recipient {r.user_id} does not render: {got.message}")
        pf.sampled += 1
    pf.estimate_seconds = pf.total * len(spec.channels) / delivery_rate if delivery_rate > 0 else 0.0
    if spec.rate_per_minute:   # paced: no faster than its rate (a send window may stretch it further)
        pf.estimate_seconds = max(pf.estimate_seconds, pf.total * len(spec.channels) * 60 / spec.rate_per_minute)
    return pf
