"""Pure parsing and validation of user-import rows (CSV or JSON lines) for ``herald users import``.

A field that is absent keeps what PostgreSQL already has; a field present but
empty clears it (email, phone, first name) or resets it to the default
(locale ``en``, time zone ``UTC``). ``preferences``, when present, replaces
the user's preferences; listed ``devices`` are added or refreshed (devices not
listed are left alone).

CSV columns: ``id`` (or ``user_id``), ``email``, ``phone``, ``locale``,
``time_zone``, ``first_name``, ``devices`` (``platform:token`` separated by
spaces or ``;``), ``preferences`` (a JSON object as below).
JSON lines: the same keys; ``devices`` a list of ``{"platform", "token"}`` (or
``"platform:token"`` strings); ``preferences`` an object
``{"muted": bool, "channels": {"sms": false}, "categories": {"marketing": false},
"quiet_start": "22:00", "quiet_end": "07:00"}``.
"""
from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import time
from typing import Any

from producers.api.validation import email_problem, locale_problem, phone_problem, push_token_problem, time_zone_problem
from producers.lines import Rejected, json_objects
from schemas.vocabulary import CHANNELS

ID = re.compile(r"^[A-Za-z0-9._:@+\-]{1,200}$")  # the API's user id rule
CATEGORY = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
FIELDS = ("email", "phone", "locale", "time_zone", "first_name")
PRESENT_BIT = {name: 1 << i for i, name in enumerate(FIELDS)}
KNOWN_KEYS = {"id", "user_id", "devices", "preferences", "timezone", *FIELDS}
PREF_KEYS = {"muted", "channels", "categories", "quiet_start", "quiet_end"}


@dataclass(frozen=True, slots=True)
class Prefs:
    muted: bool
    channels: dict[str, bool]
    categories: dict[str, bool]
    quiet_start: time | None
    quiet_end: time | None


@dataclass(frozen=True, slots=True)
class UserRow:
    line: int
    id: str
    present: int                          # bit per FIELDS entry the row carries
    email: str | None
    phone: str | None
    locale: str | None
    time_zone: str | None
    first_name: str | None
    devices: tuple[tuple[str, str], ...]  # (platform, token)
    prefs: Prefs | None


class Invalid(ValueError):
    pass


def _text(v: Any, name: str) -> str | None:
    if v is None:
        return None
    if not isinstance(v, (str, int, float)) or isinstance(v, bool):
        raise Invalid(f"{name} must be text")
    s = str(v).strip()
    return s or None


def _bool(v: Any, name: str) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
        return v.strip().lower() in ("true", "1", "yes")
    raise Invalid(f"{name} must be true or false")


def _time(v: Any, name: str) -> time | None:
    if v in (None, ""):
        return None
    if not isinstance(v, str) or not re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", v.strip()):
        raise Invalid(f"{name} must be HH:MM, got {str(v)[:20]!r}")
    try:
        return time.fromisoformat(v.strip().zfill(5) if len(v.strip()) == 4 else v.strip())
    except ValueError as exc:
        raise Invalid(f"{name} {v!r} is not a time of day") from exc


def _flags(v: Any, name: str, allowed) -> dict[str, bool]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise Invalid(f"preferences.{name} must be an object like {{\"sms\": false}}")
    out = {}
    for k, b in v.items():
        if not allowed(k):
            raise Invalid(f"preferences.{name}: unknown {name[:-1] if name != 'categories' else 'category'} {k!r}")
        out[k] = _bool(b, f"preferences.{name}.{k}")
    return out


def parse_prefs(v: Any) -> Prefs:
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError as exc:
            raise Invalid(f"preferences is not JSON: {exc.msg}") from exc
    if not isinstance(v, dict):
        raise Invalid("preferences must be a JSON object")
    if unknown := set(v) - PREF_KEYS:
        raise Invalid(f"preferences: unknown key(s) {', '.join(sorted(unknown))}")
    qs, qe = _time(v.get("quiet_start"), "quiet_start"), _time(v.get("quiet_end"), "quiet_end")
    if (qs is None) != (qe is None):
        raise Invalid("quiet hours need both quiet_start and quiet_end")
    return Prefs(
        muted=_bool(v.get("muted", False), "preferences.muted"),
        channels=_flags(v.get("channels"), "channels", lambda k: k in CHANNELS),
        categories=_flags(v.get("categories"), "categories", lambda k: isinstance(k, str) and bool(CATEGORY.match(k))),
        quiet_start=qs,
        quiet_end=qe,
    )


def parse_devices(v: Any) -> tuple[tuple[str, str], ...]:
    if v in (None, ""):
        return ()
    items: Iterable[Any] = re.split(r"[;\s]+", v.strip()) if isinstance(v, str) else v
    if not isinstance(items, list) and not isinstance(v, str):
        raise Invalid("devices must be a list")
    out = []
    for item in items:
        if isinstance(item, dict):
            platform, token = item.get("platform"), item.get("token")
        elif isinstance(item, str) and ":" in item:
            platform, _, token = item.partition(":")
        else:
            raise Invalid(f"device {str(item)[:40]!r} is not platform:token")
        if not isinstance(platform, str) or not isinstance(token, str):
            raise Invalid("a device needs a platform and a token")
        if problem := push_token_problem(platform, token):
            raise Invalid(f"device: {problem}")
        out.append((platform, token))
    return tuple(out)


def validate(line: int, raw: dict[str, Any]) -> UserRow | Rejected:
    """One input row → a ``UserRow`` or the first reason it cannot be imported."""
    try:
        uid = _text(raw.get("id", raw.get("user_id")), "id")
        if not uid:
            raise Invalid("no id")
        if not ID.match(uid):
            raise Invalid(f"id {uid[:40]!r} may hold only A-Z a-z 0-9 . _ : @ + - (1-200 characters)")
        if "timezone" in raw and "time_zone" not in raw:
            raw = {**raw, "time_zone": raw["timezone"]}
        present, values = 0, {}
        for name in FIELDS:
            if name in raw:
                present |= PRESENT_BIT[name]
                values[name] = _text(raw[name], name)
        if (v := values.get("email")) and (p := email_problem(v)):
            raise Invalid(p)
        if (v := values.get("phone")) and (p := phone_problem(v)):
            raise Invalid(p)
        if (v := values.get("locale")) and (p := locale_problem(v)):
            raise Invalid(p)
        if (v := values.get("time_zone")) and (p := time_zone_problem(v)):
            raise Invalid(p)
        if (v := values.get("first_name")) and len(v) > 200:
            raise Invalid("first_name longer than 200 characters")
        devices = parse_devices(raw.get("devices"))
        prefs = parse_prefs(raw["preferences"]) if raw.get("preferences") not in (None, "") else None
    except Invalid as exc:
        return Rejected(line, str(exc))
    return UserRow(line, uid, present, values.get("email"), values.get("phone"), values.get("locale"),
                   values.get("time_zone"), values.get("first_name"), devices, prefs)


def read_csv(lines: Iterable[str]) -> Iterator[UserRow | Rejected]:
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        return
    header = [h.strip().lower() for h in header]
    if "id" not in header and "user_id" not in header:
        raise ValueError(f"the CSV header needs an id column; found {', '.join(header) or 'nothing'}")
    if unknown := [h for h in header if h and h not in KNOWN_KEYS]:
        raise ValueError(f"unknown CSV column(s) {', '.join(unknown)}; known: id, {', '.join(FIELDS)}, devices, preferences")
    width = len(header)
    for row in reader:
        n = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != width:
            yield Rejected(n, f"{len(row)} columns, the header has {width}")
            continue
        yield validate(n, dict(zip(header, row, strict=True)))


def read_jsonl(lines: Iterable[str]) -> Iterator[UserRow | Rejected]:
    for item in json_objects(lines):
        if isinstance(item, Rejected):
            yield item
            continue
        n, obj = item
        if unknown := set(obj) - KNOWN_KEYS:
            yield Rejected(n, f"unknown key(s) {', '.join(sorted(unknown))}")
            continue
        yield validate(n, obj)
