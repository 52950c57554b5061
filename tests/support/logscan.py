"""Scan a process's log for what must never be in one: addresses, phone numbers, credentials (or their prefixes)."""
from __future__ import annotations

import re
from pathlib import Path

from infra.settings import Settings

ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
PHONE = re.compile(r"(?:\+|%2[Bb])\d{7,15}\b")


def credentials(settings: Settings) -> list[str]:
    """The provider secrets the settings hold (the sandbox's by default)."""
    values = [settings.sendgrid_api_key.get_secret_value(), settings.twilio_auth_token.get_secret_value()]
    if settings.smtp_password is not None:
        values.append(settings.smtp_password.get_secret_value())
    return [v for v in values if v]


def leaks(text: str, secrets: list[str], shortest: int = 4) -> list[str]:
    """The lines of ``text`` holding an address, a phone number, or a prefix (``shortest`` or more characters) of a secret."""
    found: list[str] = []
    for line in text.splitlines():
        if ADDRESS.search(line) or PHONE.search(line) or any(s[:n] in line for s in secrets for n in range(min(shortest, len(s)), len(s) + 1)):
            found.append(line)
    return found


def scan_logs(paths: list[Path], secrets: list[str], shortest: int = 4) -> dict[str, list[str]]:
    """``{path: leaking lines}`` for the logs that leak (an empty dict when none does)."""
    out: dict[str, list[str]] = {}
    for p in paths:
        bad = leaks(p.read_text(errors="replace"), secrets, shortest)
        if bad:
            out[str(p)] = bad[:5]
    return out
