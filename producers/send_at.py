"""Time-zone aware ``send_at`` values for scheduled sends: "Monday 09:00 in the user's zone" as one UTC instant.

``send_at`` on the wire is an absolute instant (timestamp-millis); these
helpers turn a wall-clock wish in the recipient's IANA zone into it. A wall
time that does not exist (the spring-forward gap) is read with the offset
before the change, i.e. as the same length of time after the last valid
minute (02:30 in a 02:00→03:00 gap is 03:30); a repeated one (autumn) is its
first occurrence.
"""
from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{tz!r} is not an IANA time zone (like Europe/Vienna)") from exc


def _time(at: time | str) -> time:
    if isinstance(at, time):
        return at.replace(tzinfo=None)
    try:
        return time.fromisoformat(at)
    except ValueError as exc:
        raise ValueError(f"{at!r} is not a time of day (HH:MM)") from exc


def _weekday(day: int | str) -> int:
    if isinstance(day, int) and 0 <= day <= 6:
        return day
    if isinstance(day, str) and day.lower() in WEEKDAYS:
        return WEEKDAYS.index(day.lower())
    if isinstance(day, str):
        matches = [i for i, name in enumerate(WEEKDAYS) if name.startswith(day.lower())] if len(day) >= 2 else []
        if len(matches) == 1:
            return matches[0]
    raise ValueError(f"{day!r} is not a weekday (monday … sunday, or 0 … 6)")


def local_instant(on: date, at: time | str, tz: str) -> datetime:
    """``at`` o'clock on ``on`` in zone ``tz``, as an aware UTC datetime."""
    local = datetime.combine(on, _time(at)).replace(tzinfo=_zone(tz), fold=0)
    return local.astimezone(UTC)


def next_local(at: time | str, tz: str, *, weekday: int | str | None = None, now: datetime | None = None) -> datetime:
    """The next ``at`` (on ``weekday``, if given) in zone ``tz`` strictly after ``now``, in UTC.

    ``next_local("09:00", "Asia/Tokyo", weekday="monday")`` is the coming Monday 09:00 in Tokyo.
    """
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    zone = _zone(tz)
    today = now.astimezone(zone).date()
    step = 7 if weekday is not None else 1
    day = today if weekday is None else today + timedelta(days=(_weekday(weekday) - today.weekday()) % 7)
    for _ in range(3):  # today's slot may have passed; the next one cannot have
        candidate = local_instant(day, at, tz)
        if candidate > now:
            return candidate
        day += timedelta(days=step)
    raise AssertionError("unreachable: a later slot always exists")


def to_ms(when: datetime | int) -> int:
    """An aware datetime (or epoch milliseconds) as epoch milliseconds."""
    if isinstance(when, bool):
        raise TypeError("send_at must be a datetime or epoch milliseconds")
    if isinstance(when, int):
        return when
    if when.tzinfo is None:
        raise ValueError("send_at must be timezone-aware (a naive datetime has no instant): use next_local() or tzinfo=")
    return int(when.timestamp() * 1000)
