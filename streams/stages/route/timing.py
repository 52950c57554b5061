"""Steps 4, 5 and 8: time-to-live, send_at and quiet hours."""
from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.stages.route.intent import Intent


def is_expired(intent: Intent, now_ms: int) -> bool:
    """Older than the route's TTL, counted from the event time or from send_at when that is later."""
    start = max(intent.occurred_ms, intent.send_at_ms or 0)
    return now_ms - start > intent.ttl_seconds * 1000


def is_for_later(intent: Intent, now_ms: int) -> bool:
    """send_at still in the future. ``send_at <= now`` is due: the scheduler's republished pass goes through."""
    return intent.send_at_ms is not None and intent.send_at_ms > now_ms


def zone(name: str | None) -> ZoneInfo | timezone:
    try:
        return ZoneInfo(name) if name else UTC
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file name
        return UTC


def quiet_until(now_ms: int, tz_name: str | None, start: time | None, end: time | None) -> int | None:
    """When the user's quiet window ends (ms since epoch) if ``now`` falls inside it, else None.

    The window is [start, end) in the user's wall-clock time and may span
    midnight (22:00–07:00). start == end means no window.
    """
    if start is None or end is None or start == end:
        return None
    tz = zone(tz_name)
    local = datetime.fromtimestamp(now_ms / 1000, tz)
    t = local.time().replace(tzinfo=None)
    if start < end:
        inside = start <= t < end
        end_day = local.date()
    else:  # spans midnight
        inside = t >= start or t < end
        end_day = local.date() + timedelta(days=1) if t >= start else local.date()
    if not inside:
        return None
    naive_end = datetime.combine(end_day, end)
    end_local = naive_end.replace(tzinfo=tz)
    # a wall-clock end inside a DST gap or fold still maps to one instant; never earlier than now
    return max(int(end_local.timestamp() * 1000), now_ms + 1)


def window_opens(now_ms: int, tz_name: str | None, window: tuple[time, time]) -> int | None:
    """When the send window next opens (ms since epoch) if ``now`` is outside it in the user's zone, else None.

    Outside the window [start, end) is the quiet window [end, start): it ends where the send window opens.
    """
    return quiet_until(now_ms, tz_name, window[1], window[0])


Wait = Literal["quiet_hours", "send_window"]


def next_allowed(now_ms: int, tz_name: str | None, window: tuple[time, time], quiet_start: time | None,
                 quiet_end: time | None) -> tuple[int, Wait] | None:
    """The first time (ms) from ``now`` inside the campaign's send window and outside the user's quiet hours, and what
    it waited for last; None when ``now`` is such a time. A window that lies wholly inside the quiet hours can never
    be met: the user's quiet hours win (the message goes when they end, or now)."""
    at = now_ms
    why: Wait | None = None
    for _ in range(4):
        moved = False
        if (q := quiet_until(at, tz_name, quiet_start, quiet_end)) is not None:
            at, why, moved = q, "quiet_hours", True
        if (w := window_opens(at, tz_name, window)) is not None:
            at, why, moved = w, "send_window", True
        if not moved:
            return (at, why) if why is not None else None
    q = quiet_until(now_ms, tz_name, quiet_start, quiet_end)
    return (q, "quiet_hours") if q is not None else None
