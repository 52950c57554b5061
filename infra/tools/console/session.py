"""Console sessions: a signed, expiring cookie naming the API key that signed in, and the CSRF token of its forms.

The cookie holds ``key id . expiry . nonce`` and an HMAC-SHA256 of them under the console's secret; nothing in it
is the key itself. A session is good while the signature holds, the expiry is ahead and the key is not revoked
(checked on every request, so revoking a key ends its sessions). A form's CSRF token is an HMAC of the session's
nonce: a page of another site cannot read it, and a forged POST without it is refused.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

COOKIE = "herald_console"
LOGIN_COOKIE = "herald_console_login"   # the sign-in form's double-submit token, before there is a session


class SessionError(ValueError):
    """The cookie is missing, forged or expired; the message says which (shown on the sign-in page)."""


@dataclass(frozen=True, slots=True)
class Session:
    key_id: int
    expires_at: int   # unix seconds
    nonce: str


def _mac(secret: bytes, text: str) -> str:
    return hmac.new(secret, text.encode(), hashlib.sha256).hexdigest()


def new_session(key_id: int, seconds: float, now: float | None = None) -> Session:
    return Session(key_id, int((time.time() if now is None else now) + seconds), secrets.token_urlsafe(16))


def sign(secret: bytes, s: Session) -> str:
    body = f"{s.key_id}.{s.expires_at}.{s.nonce}"
    return f"{body}.{_mac(secret, 'session|' + body)}"


def verify(secret: bytes, cookie: str | None, now: float | None = None) -> Session:
    if not cookie:
        raise SessionError("sign in with an API key that has the read or admin scope")
    parts = cookie.split(".")
    if len(parts) != 4:
        raise SessionError("the session cookie is not one this console made; sign in again")
    key_id, expires_at, nonce, mac = parts
    if not hmac.compare_digest(mac, _mac(secret, "session|" + ".".join(parts[:3]))):
        raise SessionError("the session cookie is not one this console made; sign in again")
    s = Session(int(key_id), int(expires_at), nonce)
    if s.expires_at <= (time.time() if now is None else now):
        raise SessionError("the session has expired; sign in again")
    return s


def csrf_token(secret: bytes, nonce: str) -> str:
    """The token every POST form of a session carries (and the sign-in form, with the login cookie's nonce)."""
    return _mac(secret, "csrf|" + nonce)


def csrf_ok(secret: bytes, nonce: str | None, token: str | None) -> bool:
    return bool(nonce and token) and hmac.compare_digest(csrf_token(secret, nonce or ""), token or "")
