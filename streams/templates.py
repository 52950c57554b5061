"""Templates: a sandboxed Jinja2 environment, compiled templates, the locale fallback chain.

Templates are data (the ``templates`` table: code x channel x locale, versioned,
one active version). The store that loads and caches the active versions is
``streams.stores.templates.TemplateStore``.
"""
from __future__ import annotations

import logging
import re
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment


def money(cents: Any, currency: str = "EUR") -> str:
    """``{{ total_cents | money(currency) }}`` → ``12.50 EUR``."""
    value = int(cents)
    sign = "-" if value < 0 else ""
    value = abs(value)
    return f"{sign}{value // 100}.{value % 100:02d} {currency}"


log = logging.getLogger("herald.templates")

SAFE_URL_SCHEMES = frozenset({"http", "https", "mailto"})
URL_PLACEHOLDER = "#"
# What a browser ignores when it parses an href (WHATWG URL): leading and trailing
# C0 controls and spaces, and every tab, CR and LF, so "java\tscript:" is javascript:.
_URL_EDGES = "".join(map(chr, range(0x21)))
_URL_TAB_NEWLINE = re.compile(r"[\t\n\r]")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")

# Warnings of the render in progress (render() collects them into Rendered.warnings).
render_warnings: ContextVar[list[str] | None] = ContextVar("render_warnings", default=None)


def warn(message: str) -> None:
    log.warning("template: %s", message)
    collected = render_warnings.get()
    if collected is not None:
        collected.append(message)


def safe_url(value: Any) -> str:
    """``href="{{ link | url }}"``: the URL (as a browser reads it) when it is http, https or mailto, else ``#``.

    A placeholder rather than a render failure: a link variable is event data, and
    a notification with one dead link (counted as a warning) beats a dead-lettered
    password reset, while a ``javascript:`` href must never reach an inbox.
    The result is a plain string, so autoescape still escapes it for the attribute.
    """
    url = str.__str__(_URL_TAB_NEWLINE.sub("", str(value)).strip(_URL_EDGES))  # plain str, even from Markup
    m = _SCHEME.match(url)
    if m is None or m.group(1).lower() not in SAFE_URL_SCHEMES:
        # the scheme only: a link can carry a token, and the logs are no place for it
        what = f"a {m.group(1).lower()}: link" if m else "a link without an http, https or mailto scheme"
        warn(f"unsafe_url: {what} was replaced by {URL_PLACEHOLDER!r}")
        return URL_PLACEHOLDER
    return url


_NUMBERS = (int, float)   # exact types: bool and int subclasses take the checked path
MAX_REPEAT = 100_000   # longest string or list a template's ``*`` may build
MAX_POWER_BITS = 4_096  # largest integer a template's ``**`` may build


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's sandbox, plus bounds on ``*`` and ``**``: ``{{ price * quantity }}`` with a string price from a
    request's variables would otherwise build a string of ``quantity`` characters (10**9: 2 GB, 12 s)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*" and type(left) in _NUMBERS and type(right) in _NUMBERS:
            return super().call_binop(context, operator, left, right)   # the common case: a price times a quantity
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_REPEAT:
                    raise SecurityError(f"'*' would repeat a {type(seq).__name__} of length {len(seq)} {n} times "
                                        f"(more than {MAX_REPEAT} items)")
        elif (operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1
              and right * left.bit_length() > MAX_POWER_BITS):
            raise SecurityError(f"'**' would build an integer of about {right * left.bit_length()} bits "
                                f"(more than {MAX_POWER_BITS})")
        return super().call_binop(context, operator, left, right)


def _env(autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = _Sandbox(undefined=StrictUndefined, autoescape=autoescape, trim_blocks=True, lstrip_blocks=True)
    env.filters["money"] = money
    env.filters["url"] = safe_url
    return env


class Environments:
    """The two sandboxed environments: HTML (autoescaped) and text (subject, text part, SMS, push)."""

    def __init__(self) -> None:
        self.text = _env(autoescape=False)
        self.html = _env(autoescape=True)


@dataclass(frozen=True, slots=True)
class TemplateSource:
    code: str
    channel: str
    locale: str
    version: int
    body_text: str
    subject: str | None = None
    body_html: str | None = None
    push_title: str | None = None


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    source: TemplateSource
    text: Template | None
    subject: Template | None
    html: Template | None
    push_title: Template | None
    error: str | None = None  # a syntax error: every render of this version fails with it
    # Jinja's globals (range, namespace, ...) as one plain dict: a render merges them into its context once for all
    # parts (``streams.stages.route.render``), where Jinja's own ``Template.render`` lists and copies its ChainMap of
    # template and environment globals for each part (about 6 µs a part)
    globals: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        s = self.source
        return f"{s.code}/{s.channel}/{s.locale} v{s.version}"


def compile_template(envs: Environments, src: TemplateSource) -> CompiledTemplate:
    try:
        text = envs.text.from_string(src.body_text)
        return CompiledTemplate(
            src,
            text,
            envs.text.from_string(src.subject) if src.subject else None,
            envs.html.from_string(src.body_html) if src.body_html else None,
            envs.text.from_string(src.push_title) if src.push_title else None,
            globals=dict(text.globals),   # both environments have Jinja's default globals, nothing adds to them
        )
    except TemplateSyntaxError as exc:
        return CompiledTemplate(src, None, None, None, None, f"syntax error line {exc.lineno}: {exc.message}")
    except Exception as exc:  # noqa: BLE001 - a template row is data: a bad one fails its renders, not the worker
        return CompiledTemplate(src, None, None, None, None, f"does not compile: {type(exc).__name__}: {exc}")


def check_syntax(envs: Environments, src: TemplateSource) -> str | None:
    """None when every part compiles, else the error (for ``herald templates add``)."""
    return compile_template(envs, src).error


def locale_chain(locale: str | None) -> list[str]:
    """``de-AT`` → ``["de-AT", "de", "default"]`` (``de_AT`` is read as ``de-AT``)."""
    chain: list[str] = []
    loc = (locale or "").replace("_", "-").strip()
    while loc:
        chain.append(loc)
        loc = loc.rpartition("-")[0]
    chain.append("default")
    return list(dict.fromkeys(chain))
