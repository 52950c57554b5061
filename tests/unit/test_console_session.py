"""The console's session cookie and CSRF token (pure): signed, expiring, bound to one session."""
from __future__ import annotations

import pytest

from infra.tools.console.routes import selection_from
from infra.tools.console.session import Session, SessionError, csrf_ok, csrf_token, new_session, sign, verify

SECRET = b"s" * 32


def test_a_signed_session_verifies_until_it_expires():
    s = new_session(7, 60, now=1000)
    cookie = sign(SECRET, s)
    assert verify(SECRET, cookie, now=1059) == s
    with pytest.raises(SessionError, match="expired"):
        verify(SECRET, cookie, now=1060)


@pytest.mark.parametrize("cookie", [None, "", "7.2000.n", "7.2000.n.0000", "8.2000.n.{mac}", "7.9999.n.{mac}"])
def test_a_missing_malformed_or_altered_cookie_is_refused(cookie):
    mac = sign(SECRET, Session(7, 2000, "n")).rsplit(".", 1)[1]
    with pytest.raises(SessionError):
        verify(SECRET, cookie.format(mac=mac) if cookie else cookie, now=1000)


def test_a_cookie_signed_with_another_secret_is_refused():
    with pytest.raises(SessionError, match="not one this console made"):
        verify(SECRET, sign(b"other", Session(7, 2000, "n")), now=1000)


def test_the_csrf_token_belongs_to_one_session():
    a, b = new_session(1, 60), new_session(1, 60)
    assert csrf_ok(SECRET, a.nonce, csrf_token(SECRET, a.nonce))
    assert not csrf_ok(SECRET, b.nonce, csrf_token(SECRET, a.nonce))
    assert not csrf_ok(SECRET, a.nonce, None) and not csrf_ok(SECRET, None, "x") and not csrf_ok(SECRET, a.nonce, "")
    assert not csrf_ok(b"other", a.nonce, csrf_token(SECRET, a.nonce))


def test_the_replay_filters_read_as_the_cli_reads_them():
    sel = selection_from({"since": "2026-05-01T12:00", "stage": "deliver, route", "reason": "no_route", "origin_topic": ""})
    assert sel.since_ms == 1777636800000 and sel.until_ms is None
    assert sel.stages == {"deliver", "route"} and sel.error_classes == {"no_route"} and not sel.origin_topics
    with pytest.raises(ValueError, match="is not a time"):
        selection_from({"until": "yesterday"})
