"""Checks of one delivery's content, made before a sink builds its message or request.

A value a provider call could not carry safely is refused as that delivery's
own ``Permanent`` (``InvalidAddress`` for the address) with a reason naming the
field; the other deliveries of the chunk are sent as usual.

Header values (subject, addresses, display names, push titles) are refused,
not folded, when they hold a line break or another control character: CR/LF
would end the header (header injection), NUL and the other C0/C1 controls are
never text, and Unicode's line separators are line breaks to Python's email
package. Refusing says clearly what was wrong; folding would silently send a
subject the template author never wrote. Bodies may hold line breaks and tabs,
but never NUL or the other control characters.
"""
from __future__ import annotations

import re

from sinks.errors import InvalidAddress, Permanent

# C0 controls but TAB, DEL, the C1 controls, and the characters str.splitlines() treats as line ends
_HEADER_BAD = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
# bodies: line ends (CR, LF) and TAB are text; the rest of C0, DEL and NUL are not
_BODY_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# an address is one mailbox: no whitespace, nothing that would make a header list or a display name of it
_ADDRESS_BAD = re.compile(r'[\s<>(),;:"\[\]\\]')
_LINE_BREAK = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def _describe(ch: str) -> str:
    if ch in _LINE_BREAK:
        return f"a line break (U+{ord(ch):04X})"
    return f"a control character (U+{ord(ch):04X})"


def check_header(name: str, value: str | None) -> None:
    """Refuse a header value with a line break or a control character (``Permanent``)."""
    if not value:
        return
    m = _HEADER_BAD.search(value)
    if m:
        raise Permanent(f"{name} contains {_describe(m.group())} at position {m.start()}: refused, "
                        "a header value must be one line of text")


def check_body(name: str, value: str | None, max_chars: int | None = None) -> None:
    """Refuse a body with NUL or another control character, or longer than ``max_chars`` (``Permanent``)."""
    if not value:
        return
    m = _BODY_BAD.search(value)
    if m:
        raise Permanent(f"{name} contains {_describe(m.group())} at position {m.start()}: refused")
    if max_chars is not None and len(value) > max_chars:
        raise Permanent(f"{name} has {len(value)} characters, more than the provider's limit of {max_chars}")


def check_email_address(address: str | None) -> None:
    """Refuse what cannot be one mailbox, ``local@domain`` (``InvalidAddress``)."""
    addr = address or ""
    local, at, domain = addr.rpartition("@")
    m = _HEADER_BAD.search(addr) or _ADDRESS_BAD.search(addr)
    if m:
        ch = m.group()
        what = _describe(ch) if _HEADER_BAD.match(ch) else ("whitespace" if ch.isspace() else repr(ch))
        raise InvalidAddress(f"invalid address {addr!r}: contains {what}")
    if not at or not local or not domain or "@" in local or len(addr) > 254 or len(local) > 64:
        raise InvalidAddress(f"invalid address {addr!r}: expected one local@domain of at most 254 characters")


def check_token(name: str, value: str | None) -> None:
    """A phone number or device token: non-empty, one line, no control characters or whitespace."""
    v = value or ""
    if not v or _HEADER_BAD.search(v) or any(c.isspace() for c in v):
        raise InvalidAddress(f"invalid {name} {v!r}: expected a non-empty value without whitespace or control characters")
