"""Pure validation of what users send: addresses, push tokens per platform, locales, time zones."""
from __future__ import annotations

import re
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
LOCALE = re.compile(r"^[a-z]{2,3}(?:-[A-Z][a-z]{3})?(?:-(?:[A-Z]{2}|[0-9]{3}))?$")
# FCM registration tokens (Android, web, and iOS apps using FCM): long, URL-safe base64 plus ':'
FCM_TOKEN = re.compile(r"^[A-Za-z0-9_\-:]{100,4096}$")
# APNs device tokens: 32 bytes as 64 hex characters
APNS_TOKEN = re.compile(r"^[0-9a-fA-F]{64}$")
PLATFORMS = ("android", "ios", "web")


def email_problem(value: str) -> str | None:
    if len(value) > 254 or not EMAIL.match(value):
        return f"'{value[:80]}' is not an email address"
    return None


def phone_problem(value: str) -> str | None:
    if not E164.match(value):
        return f"'{value[:40]}' is not an E.164 phone number (like +436601234567)"
    return None


def locale_problem(value: str) -> str | None:
    if not LOCALE.match(value):
        return f"'{value[:40]}' is not a locale (like en, de-AT, zh-Hant-TW)"
    return None


def time_zone_problem(value: str) -> str | None:
    if len(value) > 64 or value not in _zones():
        return f"'{value[:64]}' is not an IANA time zone (like Europe/Vienna)"
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f"'{value[:64]}' is not an IANA time zone (like Europe/Vienna)"
    return None


def push_token_problem(platform: str, token: str) -> str | None:
    """Why ``token`` cannot be a push token of ``platform`` (None when it can)."""
    if platform not in PLATFORMS:
        return f"unknown platform '{platform[:40]}' (known: {', '.join(PLATFORMS)})"
    if platform == "ios":
        if APNS_TOKEN.match(token) or FCM_TOKEN.match(token):
            return None
        return "an ios token is an APNs device token (64 hex characters) or an FCM registration token"
    if FCM_TOKEN.match(token):
        return None
    if APNS_TOKEN.match(token):
        return (f"this looks like an APNs device token (64 hex characters), which only an ios device has; "
                f"an {platform} token is an FCM registration token")
    return f"an {platform} token is an FCM registration token (100-4096 characters of A-Z a-z 0-9 _ - :)"


_ZONES: frozenset[str] | None = None


def _zones() -> frozenset[str]:
    global _ZONES
    if _ZONES is None:
        _ZONES = frozenset(available_timezones()) | {"UTC"}
    return _ZONES
