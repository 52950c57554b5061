"""An email's MIME bytes, written directly: the ``email`` package spends about a millisecond of CPU per message.

``EmailMessage`` + ``set_content`` + flattening cost ~1.2 ms a message on this machine, which alone capped the
SMTP sink near 800 messages/s of CPU. What a notification needs is small and fixed: a few headers, a text part,
an optional HTML part. Headers are plain ASCII when they can be and RFC 2047 encoded words otherwise (folded, so
no line passes 78 characters); bodies are 7bit when ASCII with short lines, else base64. The values were checked
before (``sinks.content``: no CR/LF or control characters in headers), so nothing here can add a header.
"""
from __future__ import annotations

import base64
import binascii
import os
from email.utils import formataddr, formatdate, parseaddr

ENCODED_WORD_BYTES = 45     # 60 base64 characters: '=?utf-8?b?' + 60 + '?=' stays under RFC 2047's 75
PLAIN_HEADER_MAX = 900      # a plain header line stays far below SMTP's 998
BODY_LINE_MAX = 998
_FOLD = ",\r\n "           # a list header folded after each comma


def header_value(value: str) -> str:
    """``value`` as it may stand in a header: itself when plain printable ASCII, else folded encoded words."""
    if (value.isascii() and value.isprintable() and len(value) <= PLAIN_HEADER_MAX and "=?" not in value
            and value == value.strip() and "  " not in value):
        return value
    words: list[str] = []
    chunk = bytearray()
    for ch in value:
        b = ch.encode("utf-8")
        if len(chunk) + len(b) > ENCODED_WORD_BYTES:
            words.append(_word(chunk))
            chunk = bytearray()
        chunk += b
    if chunk:
        words.append(_word(chunk))
    return "\r\n ".join(words)


def _word(raw: bytes | bytearray) -> str:
    return "=?utf-8?b?" + base64.b64encode(raw).decode("ascii") + "?="


def address_header(address: str) -> str:
    """``Name <addr>`` with the display name encoded when it needs it (the sender is formatted once per sink)."""
    name, addr = parseaddr(address)
    return formataddr((name, addr), charset="utf-8") if name else addr


def _part(content_type: str, body: str) -> list[str]:
    """Header lines and body of one text part (``\\r\\n`` line ends)."""
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if body.isascii() and all(len(line) <= BODY_LINE_MAX for line in lines):
        return [f"Content-Type: {content_type}; charset=\"utf-8\"", "Content-Transfer-Encoding: 7bit", "", *lines]
    encoded = base64.encodebytes(body.encode("utf-8")).decode("ascii").rstrip("\n").split("\n")
    return [f"Content-Type: {content_type}; charset=\"utf-8\"", "Content-Transfer-Encoding: base64", "", *encoded]


def render(*, sender: str, to: str, subject: str, message_id: str, delivery_id: str, text: str,
           html: str | None, extra: dict[str, str] | None = None) -> bytes:
    """The whole message (``sender`` already formatted by ``address_header``); UTF-8 only in a non-ASCII ``to``.

    ``extra`` headers (List-Unsubscribe) are Herald's own ASCII values; a comma-separated list is folded after
    each comma."""
    head = [
        f"From: {sender}",
        f"To: {to}",
        # surrounding whitespace (a tab, a newline) is no part of a subject: readers drop it, as the email package did
        f"Subject: {header_value(subject.strip())}",
        f"Date: {formatdate(usegmt=True)}",
        f"Message-ID: {message_id}",
        f"X-Herald-Delivery-Id: {delivery_id}",
        "MIME-Version: 1.0",
    ]
    if extra:
        head += [f"{name}: {value.replace(', ', _FOLD)}" for name, value in extra.items()]
    if not html:
        lines = head + _part("text/plain", text)
    else:
        boundary = "==herald-" + binascii.hexlify(os.urandom(12)).decode("ascii")
        lines = [*head, f"Content-Type: multipart/alternative; boundary=\"{boundary}\"", "",
                 f"--{boundary}", *_part("text/plain", text), f"--{boundary}", *_part("text/html", html),
                 f"--{boundary}--"]
        if f"--{boundary}" in text or f"--{boundary}" in html:
            raise ValueError("a body collides with the MIME boundary")   # 96 random bits: never in practice
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")
