"""send_at helpers: a wall-clock wish in the user's zone → one UTC instant, across weekdays, DST gaps and folds."""
from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from producers.send_at import local_instant, next_local, to_ms

UTC = UTC


@pytest.mark.parametrize(
    ("now", "tz", "weekday", "expected"),
    [
        # Friday 2026-03-06 12:00 UTC → the coming Monday 09:00 in Vienna (CET, UTC+1)
        (datetime(2026, 3, 6, 12, 0, tzinfo=UTC), "Europe/Vienna", "monday", datetime(2026, 3, 9, 8, 0, tzinfo=UTC)),
        # the same wish in Tokyo (UTC+9) and New York (EDT since Sunday 2026-03-08, UTC-4)
        (datetime(2026, 3, 6, 12, 0, tzinfo=UTC), "Asia/Tokyo", "monday", datetime(2026, 3, 9, 0, 0, tzinfo=UTC)),
        (datetime(2026, 3, 6, 12, 0, tzinfo=UTC), "America/New_York", "monday", datetime(2026, 3, 9, 13, 0, tzinfo=UTC)),
        # Monday 08:59 local: today still counts; Monday 09:00 exactly: next week (strictly after now)
        (datetime(2026, 3, 9, 7, 59, tzinfo=UTC), "Europe/Vienna", "monday", datetime(2026, 3, 9, 8, 0, tzinfo=UTC)),
        (datetime(2026, 3, 9, 8, 0, tzinfo=UTC), "Europe/Vienna", "monday", datetime(2026, 3, 16, 8, 0, tzinfo=UTC)),
        # across the spring change (Vienna goes to CEST, UTC+2, on 2026-03-29)
        (datetime(2026, 3, 27, 12, 0, tzinfo=UTC), "Europe/Vienna", "mon", datetime(2026, 3, 30, 7, 0, tzinfo=UTC)),
        # it is already Monday in Tokyo while it is Sunday in UTC
        (datetime(2026, 3, 8, 20, 0, tzinfo=UTC), "Asia/Tokyo", 0, datetime(2026, 3, 9, 0, 0, tzinfo=UTC)),
        # no weekday: the next 09:00
        (datetime(2026, 3, 6, 12, 0, tzinfo=UTC), "Europe/Vienna", None, datetime(2026, 3, 7, 8, 0, tzinfo=UTC)),
        (datetime(2026, 3, 6, 7, 0, tzinfo=UTC), "Europe/Vienna", None, datetime(2026, 3, 6, 8, 0, tzinfo=UTC)),
    ],
)
def test_next_local_nine_oclock(now, tz, weekday, expected):
    assert next_local("09:00", tz, weekday=weekday, now=now) == expected


def test_a_wall_time_in_the_spring_gap_is_read_with_the_old_offset():
    # 02:30 does not exist in Vienna on 2026-03-29; it is taken as 01:30 UTC (= 03:30 CEST)
    assert local_instant(date(2026, 3, 29), "02:30", "Europe/Vienna") == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)


def test_a_repeated_wall_time_in_autumn_is_the_first_one():
    # 02:30 happens twice in Vienna on 2026-10-25; the first is CEST (UTC+2)
    assert local_instant(date(2026, 10, 25), time(2, 30), "Europe/Vienna") == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: next_local("09:00", "Mars/Olympus", now=datetime.now(UTC)), "IANA time zone"),
        (lambda: next_local("nine", "UTC", now=datetime.now(UTC)), "time of day"),
        (lambda: next_local("09:00", "UTC", weekday="someday", now=datetime.now(UTC)), "weekday"),
        (lambda: next_local("09:00", "UTC", weekday="t", now=datetime.now(UTC)), "weekday"),  # tuesday or thursday?
        (lambda: next_local("09:00", "UTC", now=datetime(2026, 1, 1)), "timezone-aware"),
        (lambda: to_ms(datetime(2026, 1, 1)), "timezone-aware"),
    ],
)
def test_bad_wishes_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_to_ms():
    assert to_ms(datetime(2026, 1, 1, tzinfo=UTC)) == 1_767_225_600_000
    assert to_ms(1_767_225_600_000) == 1_767_225_600_000
