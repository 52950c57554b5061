"""Step 10: render one channel's message from a compiled template; SMS segment count.

Template text is data that operators edit, so any failure in it is caught
here and reported as a RenderFailure (DLQ stage ``render``), never raised.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Template, UndefinedError
from jinja2.exceptions import SecurityError

from schemas.records import SharedContent
from schemas.vocabulary import Channel
from streams.stages.route.split import PARTS, SHARED_PARTS, PreparedParts, slot_values
from streams.templates import CompiledTemplate, render_warnings

GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENDED = set("^{}\\[~]|€\f")


@dataclass(slots=True)   # not frozen: one per recipient, and a frozen init costs 3x (treated as immutable)
class Rendered:
    text: str
    subject: str | None = None
    html: str | None = None
    push_title: str | None = None
    sms_segments: int = 0
    push_data: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()  # e.g. an unsafe link replaced by the ``url`` filter


@dataclass(frozen=True, slots=True)
class RenderFailure:
    reason: str   # render_error | template_security | no_template
    message: str


def sms_segments(text: str) -> int:
    """Segments an SMS of ``text`` takes: GSM-7 (160, or 153 per part) unless a character needs UCS-2 (70, or 67)."""
    if not text:
        return 0
    if all(c in GSM7_BASIC or c in GSM7_EXTENDED for c in text):
        septets = sum(2 if c in GSM7_EXTENDED else 1 for c in text)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(text.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)


def _utf8(s: str) -> bool:
    """False for a lone surrogate (JSON can carry one; Avro's UTF-8 strings cannot)."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _part(t: Template | None, context: dict[str, Any]) -> str | None:
    """``t.render(context)`` on a context shared by a message's parts (it already holds the globals): Jinja keeps a
    template's top-level assignments in the render's own ``Context.vars``, so no part sees another's."""
    if t is None:
        return None
    return t.environment.concat(t.root_render_func(t.new_context(context, shared=True))).strip()


def render(tmpl: CompiledTemplate | None, channel: Channel | str, context: dict[str, Any],
           push_data: dict[str, str] | None = None) -> Rendered | RenderFailure:
    if tmpl is None:
        return RenderFailure("no_template", f"no active {channel} template for this code and locale chain")
    if tmpl.error:
        return RenderFailure("render_error", f"{tmpl.label}: {tmpl.error}")
    part = "text"
    warnings: list[str] = []
    token = render_warnings.set(warnings)
    shared = {**tmpl.globals, **context}
    try:
        text = _part(tmpl.text, shared) or ""
        part = "subject"
        subject = _part(tmpl.subject, shared)
        part = "html"
        html = _part(tmpl.html, shared)
        part = "push_title"
        title = _part(tmpl.push_title, shared)
    except SecurityError as exc:
        return RenderFailure("template_security", f"{tmpl.label} ({part}): unsafe access refused: {exc}")
    except UndefinedError as exc:
        return RenderFailure("render_error", f"{tmpl.label} ({part}): missing variable: {exc}")
    except Exception as exc:  # noqa: BLE001 - template code is data; any failure in it is a render error
        return RenderFailure("render_error", f"{tmpl.label} ({part}): {type(exc).__name__}: {exc}")
    finally:
        render_warnings.reset(token)
    return finish(tmpl, channel, text, subject, html, title, push_data, tuple(warnings))


def finish(tmpl: CompiledTemplate, channel: Channel | str, text: str, subject: str | None, html: str | None,
           title: str | None, push_data: dict[str, str] | None, warnings: tuple[str, ...]) -> Rendered | RenderFailure:
    """The checks every rendered message passes, and the message as its channel carries it."""
    if not (text.isascii() and (subject is None or subject.isascii()) and (html is None or html.isascii())
            and (title is None or title.isascii())):   # the common case in one pass; else each part is checked
        for name, value in (("text", text), ("subject", subject), ("html", html), ("push_title", title)):
            if value and not _utf8(value):
                return RenderFailure("render_error", f"{tmpl.label} ({name}): renders a lone surrogate, which is no UTF-8 "
                                                     "text (a \\ud800-style escape in variables_json?)")
    if not text:
        return RenderFailure("render_error", f"{tmpl.label}: the text part rendered empty")
    if channel == Channel.EMAIL and not subject:
        return RenderFailure("render_error", f"{tmpl.label}: an email template needs a subject")
    return Rendered(
        text=text,
        subject=subject if channel == Channel.EMAIL else None,
        html=html if channel == Channel.EMAIL else None,
        push_title=title if channel == Channel.PUSH else None,
        sms_segments=sms_segments(text) if channel == Channel.SMS else 0,
        push_data=dict(push_data or {}) if channel == Channel.PUSH else {},
        warnings=warnings,
    )


def render_prepared(tmpl: CompiledTemplate, channel: Channel | str, prepared: PreparedParts, view: dict[str, Any],
                    ids: dict[str, str], push_data: dict[str, str] | None = None) -> Rendered | RenderFailure:
    """``render`` of a campaign recipient from the chunk's pre-split parts (``streams.stages.route.split``)."""
    text, subject, html, title = (p.fill(view, ids) if (p := prepared.get(part)) is not None else None for part in PARTS)
    warnings = tuple(w for p in prepared.values() for w in p.warnings)
    return finish(tmpl, channel, text or "", subject, html, title, push_data, warnings)


def render_shared(tmpl: CompiledTemplate, prepared: PreparedParts, content: SharedContent, view: dict[str, Any],
                  ids: dict[str, str]) -> tuple[Rendered, tuple[str, ...]] | RenderFailure:
    """``render_prepared`` of a campaign email whose chunk carries ``content`` once: (the message with the parts
    ``content`` holds left empty, this recipient's slot values that make them), after the same checks as ``finish``
    made on the pieces and values, never joined here."""
    values = slot_values(prepared, content, view, ids)
    whole: dict[str, str | None] = {}
    at = 0
    for part, pieces in zip(SHARED_PARTS, content.parts(), strict=True):
        p = prepared.get(part)
        if pieces is None:
            whole[part] = p.fill(view, ids) if p is not None else None
            continue
        n = len(pieces) - 1
        mine = values[at:at + n]
        if not (content.ascii and "".join(mine).isascii()) and not all(_utf8(v) for v in (*pieces, *mine)):
            return RenderFailure("render_error", f"{tmpl.label} ({part}): renders a lone surrogate, which is no "
                                                 "UTF-8 text (a \\ud800-style escape in variables_json?)")
        at += n
        # with slots, the first piece holds more than whitespace (``Prepared.literals``): only a slot-less part is empty
        whole[part] = "x" if n or pieces[0] else ""
    checked = finish(tmpl, Channel.EMAIL, whole["text"] or "", whole["subject"], whole["html"], None, None,
                     tuple(w for p in prepared.values() for w in p.warnings))
    if isinstance(checked, RenderFailure):
        return checked
    for part, pieces in zip(SHARED_PARTS, content.parts(), strict=True):
        if pieces is not None:
            setattr(checked, part, "" if part == "text" else None)
    return checked, values
