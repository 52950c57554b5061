"""Cron expressions in a recipient's time zone: the next occurrence as a UTC instant (croniter reads the expression).

croniter walks the recipient's wall clock (naive local times); each wall time is then placed on the time line:

- a wall time that does not exist (the spring-forward gap, 02:30 when clocks jump from 02:00 to 03:00) fires at
  the first valid instant after it: the transition itself (03:00), and several gap times fire there once;
- a wall time that occurs twice (autumn, 02:30 before and after clocks go back) fires once, at its first
  occurrence.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

MAX_CANDIDATES = 10_000   # wall times looked at before giving up (an expression that never matches, e.g. 30 February)


def zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"{tz!r} is not an IANA time zone (like Europe/Vienna)") from exc


def check(expr: str) -> str:
    """``expr`` if it is a five-field cron expression (minute hour day-of-month month day-of-week), else ValueError."""
    if len(expr.split()) != 5 or not croniter.is_valid(expr):
        raise ValueError(f"{expr!r} is not a cron expression of five fields: minute hour day-of-month month "
                         "day-of-week (like '0 9 * * 1', Mondays at 09:00)")
    return expr


def place(wall: datetime, where: ZoneInfo) -> datetime:
    """The UTC instant of the naive local ``wall`` time in ``where``: its first occurrence when it occurs twice, the
    first valid instant after it when it does not exist."""
    first = wall.replace(tzinfo=where, fold=0).astimezone(UTC)
    if first.astimezone(where).replace(tzinfo=None) == wall:
        return first
    # in a gap: fold=1 reads it with the offset after the transition (an instant before it), fold=0 with the offset
    # before (an instant after it); the transition, the first instant with the later offset, lies between
    lo = int(wall.replace(tzinfo=where, fold=1).astimezone(UTC).timestamp())
    hi = int(first.timestamp())
    after = datetime.fromtimestamp(hi, UTC).astimezone(where).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, UTC).astimezone(where).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def next_occurrence(expr: str, tz: str, after: datetime) -> datetime:
    """The first occurrence of ``expr`` in zone ``tz`` strictly after the instant ``after`` (aware), in UTC."""
    if after.tzinfo is None:
        raise ValueError("after must be timezone-aware")
    where = zone(tz)
    start = after.astimezone(where).replace(tzinfo=None)
    try:
        walls = croniter(check(expr), start - timedelta(microseconds=start.microsecond))
        for _ in range(MAX_CANDIDATES):
            at = place(walls.get_next(datetime), where)
            if at > after:
                return at
    except CroniterBadCronError as exc:
        raise ValueError(f"{expr!r}: {exc}") from exc
    except CroniterBadDateError:
        pass
    raise ValueError(f"{expr!r} has no occurrence after {after:%Y-%m-%d %H:%M} UTC in {tz} (a date that never comes, "
                     "like 30 February?)")
