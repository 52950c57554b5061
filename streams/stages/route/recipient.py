"""Step 6–7: the recipient as data (profile, addresses, devices, preferences) and the decisions on it."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import time
from typing import Any

from schemas.vocabulary import Channel


@dataclass(slots=True)
class Recipient:
    id: str
    email: str | None = None
    phone: str | None = None
    locale: str = "en"
    time_zone: str = "UTC"
    first_name: str | None = None
    email_undeliverable: bool = False
    phone_undeliverable: bool = False
    devices: list[str] = field(default_factory=list)  # active push tokens
    muted: bool = False
    channels: dict[str, bool] = field(default_factory=dict)     # {"sms": false}: absent means allowed
    categories: dict[str, bool] = field(default_factory=dict)   # {"marketing": false}
    quiet_start: time | None = None
    quiet_end: time | None = None

    def template_view(self) -> dict[str, Any]:
        """What templates see as ``user`` (its keys: ``TEMPLATE_VIEW_KEYS``)."""
        return {"id": self.id, "first_name": self.first_name or "", "locale": self.locale, "time_zone": self.time_zone}


TEMPLATE_VIEW_KEYS = frozenset({"id", "first_name", "locale", "time_zone"})


# --- the cache format (JSON) -------------------------------------------------

def to_cache(r: Recipient) -> bytes:
    d = {
        "id": r.id, "email": r.email, "phone": r.phone, "locale": r.locale, "tz": r.time_zone,
        "first_name": r.first_name, "email_bad": r.email_undeliverable, "phone_bad": r.phone_undeliverable,
        "devices": r.devices, "muted": r.muted, "channels": r.channels, "categories": r.categories,
        "qs": r.quiet_start.isoformat() if r.quiet_start else None,
        "qe": r.quiet_end.isoformat() if r.quiet_end else None,
    }
    return json.dumps(d, separators=(",", ":")).encode()


def from_cache(data: bytes) -> Recipient:
    d = json.loads(data)
    return Recipient(
        id=d["id"], email=d["email"], phone=d["phone"], locale=d["locale"], time_zone=d["tz"],
        first_name=d["first_name"], email_undeliverable=d["email_bad"], phone_undeliverable=d["phone_bad"],
        devices=d["devices"], muted=d["muted"], channels=d["channels"], categories=d["categories"],
        quiet_start=time.fromisoformat(d["qs"]) if d["qs"] else None,
        quiet_end=time.fromisoformat(d["qe"]) if d["qe"] else None,
    )


# --- decisions -----------------------------------------------------------------

def addresses(r: Recipient, channel: Channel) -> list[str]:
    """Where a channel's message goes; an address marked undeliverable counts as none."""
    if channel == Channel.EMAIL:
        return [r.email] if r.email and not r.email_undeliverable else []
    if channel == Channel.SMS:
        return [r.phone] if r.phone and not r.phone_undeliverable else []
    if channel == Channel.PUSH:
        return list(dict.fromkeys(r.devices))
    return []


def preference_blocks(r: Recipient, channel: Channel, category: str, critical: bool) -> bool:
    """Global mute, per channel, per category; critical categories (security...) bypass them all."""
    if critical:
        return False
    return r.muted or r.channels.get(channel) is False or r.categories.get(category) is False
