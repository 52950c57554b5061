"""One-click unsubscribe (RFC 8058): signed, expiring per-user-and-category tokens and the headers that carry them.

A token is ``<payload>.<mac>``, both base64url without padding: the payload is
``v1|<expires, Unix seconds>|<category>|<user id>`` and the mac its
HMAC-SHA256 under ``HERALD_UNSUBSCRIBE__SECRET`` (or ``_FILE``). It is the only
credential of ``POST /v1/unsubscribe/{token}``: whoever holds the email may
turn that one category off for that one user, until the token expires.

The email sinks call ``Unsubscribe.headers(user_id, category)`` per message: an
HMAC and two base64 encodings, a few microseconds.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import time
from email.utils import parseaddr

from infra.settings import Settings

VERSION = "v1"
ONE_CLICK = "List-Unsubscribe=One-Click"


class TokenError(ValueError):
    """The token is malformed, forged or expired; the message says which (the API answers it as a 4xx)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason   # "malformed", "forged" or "expired"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(secret: bytes, user_id: str, category: str, expires_at: int) -> str:
    payload = f"{VERSION}|{int(expires_at)}|{category}|{user_id}".encode()
    mac = hmac.digest(secret, payload, "sha256")   # the one-shot C path: a few microseconds a message
    return f"{_b64(payload)}.{_b64(mac)}"


def read_token(secret: bytes, token: str, now: float | None = None) -> tuple[str, str]:
    """(user id, category) of a genuine, unexpired token; raises ``TokenError`` otherwise."""
    head, dot, tail = token.partition(".")
    try:
        if not dot or not head or not tail:
            raise ValueError("no '.'")
        payload, mac = _unb64(head), _unb64(tail)
    except (ValueError, binascii.Error) as exc:
        raise TokenError("malformed", "this unsubscribe link is malformed (was it cut short?)") from exc
    if not hmac.compare_digest(mac, hmac.digest(secret, payload, "sha256")):
        raise TokenError("forged", "this unsubscribe link is not one Herald signed (forged, altered, or signed with "
                                   "another HERALD_UNSUBSCRIBE__SECRET)")
    try:
        version, expires, category, user_id = payload.decode("utf-8").split("|", 3)
        expires_at = int(expires)
    except ValueError as exc:   # signed by us, so only an older format could get here
        raise TokenError("malformed", "this unsubscribe link has a format Herald does not read") from exc
    if version != VERSION or not user_id or not category:
        raise TokenError("malformed", "this unsubscribe link has a format Herald does not read")
    if (time.time() if now is None else now) > expires_at:
        raise TokenError("expired", "this unsubscribe link has expired; change your preferences from a newer email "
                                    "or in your account")
    return user_id, category


class Unsubscribe:
    """The List-Unsubscribe headers of marketing email, from ``settings.unsubscribe``."""

    def __init__(self, secret: bytes, base_url: str, mailto: str, categories: frozenset[str], valid_seconds: int) -> None:
        self.secret = secret
        self.base_url = base_url.rstrip("/")
        self.mailto = mailto
        self.categories = categories
        self.valid_seconds = valid_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> Unsubscribe:
        cfg = settings.unsubscribe
        base = cfg.base_url or settings.api.public_url or f"http://{settings.api_host}:{settings.api_port}"
        mailto = cfg.mailto or "unsubscribe@" + (parseaddr(settings.email_from)[1].rpartition("@")[2] or "herald.local")
        return cls(cfg.secret.get_secret_value().encode(), base, mailto, frozenset(cfg.categories), cfg.valid_days * 86400)

    def applies(self, category: str) -> bool:
        return category in self.categories

    def url(self, token: str) -> str:
        return f"{self.base_url}/v1/unsubscribe/{token}"

    def headers(self, user_id: str, category: str, now: float | None = None) -> dict[str, str] | None:
        """``List-Unsubscribe`` (the signed link, then a mailto) and ``List-Unsubscribe-Post``; None for a category
        that is not unsubscribable (transactional, security)."""
        if category not in self.categories:
            return None
        expires = int(time.time() if now is None else now) + self.valid_seconds
        token = make_token(self.secret, user_id, category, expires)
        return {
            # a token is base64url and '.': nothing in it needs percent-encoding
            "List-Unsubscribe": f"<{self.url(token)}>, <mailto:{self.mailto}?subject=unsubscribe%20{token}>",
            "List-Unsubscribe-Post": ONE_CLICK,
        }
