"""Cron in the recipient's zone (scheduler/cron.py): the weekly case, and the DST rules the README states.

Europe/Vienna: clocks go 02:00 → 03:00 on 28 March 2027 (CET +1 → CEST +2) and 03:00 → 02:00 on 31 October 2027.
"""
from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from scheduler.cron import next_occurrence, place
from scheduler.recurring import occurrence_id


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def run(expr: str, tz: str, after: datetime, n: int) -> list[datetime]:
    out = []
    for _ in range(n):
        after = next_occurrence(expr, tz, after)
        out.append(after)
    return out


def test_monday_0900_is_each_recipients_own_monday_morning():
    after = utc(2026, 12, 7, 0, 30)     # Monday 00:30 UTC: already 09:30 in Tokyo, still Sunday in New York
    assert next_occurrence("0 9 * * 1", "Asia/Tokyo", after) == utc(2026, 12, 14, 0, 0)
    assert next_occurrence("0 9 * * 1", "America/New_York", after) == utc(2026, 12, 7, 14, 0)
    assert next_occurrence("0 9 * * 1", "Europe/Vienna", after) == utc(2026, 12, 7, 8, 0)
    for tz in ("Asia/Tokyo", "America/New_York", "Europe/Vienna", "Pacific/Kiritimati"):
        local = next_occurrence("0 9 * * 1", tz, after).astimezone(ZoneInfo(tz))
        assert (local.weekday(), local.hour, local.minute) == (0, 9, 0)


def test_weekly_keeps_local_0900_across_a_dst_change():
    # Mondays 09:00 Vienna around the spring change: 08:00 UTC in winter, 07:00 UTC in summer
    assert run("0 9 * * 1", "Europe/Vienna", utc(2027, 3, 20), 2) == [utc(2027, 3, 22, 8), utc(2027, 3, 29, 7)]


def test_a_nonexistent_local_time_fires_at_the_first_valid_instant_after_it():
    # 02:30 does not exist on 28 March: it fires at 03:00 CEST (01:00 UTC), and the next day at 02:30 CEST again
    assert run("30 2 * * *", "Europe/Vienna", utc(2027, 3, 27, 12), 2) == [utc(2027, 3, 28, 1), utc(2027, 3, 29, 0, 30)]


def test_several_times_in_the_gap_fire_once():
    assert run("*/15 2 * * *", "Europe/Vienna", utc(2027, 3, 27, 23), 3) == [
        utc(2027, 3, 28, 1), utc(2027, 3, 29, 0), utc(2027, 3, 29, 0, 15)]


def test_an_ambiguous_local_time_fires_once_at_its_first_occurrence():
    # 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET) on 31 October: only the first
    assert run("30 2 * * *", "Europe/Vienna", utc(2027, 10, 30, 12), 2) == [utc(2027, 10, 31, 0, 30), utc(2027, 11, 1, 1, 30)]
    # hourly: the repeated 02:00 is skipped, 03:00 CET follows
    assert run("0 * * * *", "Europe/Vienna", utc(2027, 10, 30, 23, 30), 3) == [
        utc(2027, 10, 31, 0), utc(2027, 10, 31, 2), utc(2027, 10, 31, 3)]


def test_a_start_inside_the_repeated_hour_does_not_fire_its_first_pass_again():
    # now is the second 02:10 (01:10 UTC): the 02:30 of this night already fired at its first occurrence
    assert next_occurrence("30 2 * * *", "Europe/Vienna", utc(2027, 10, 31, 1, 10)) == utc(2027, 11, 1, 1, 30)


def test_place_reads_a_gap_with_a_half_hour_offset_change():
    # Lord Howe Island moves 30 minutes: 02:00 → 02:30 on 3 October 2027; 02:10 fires at 02:30 local (15:30 UTC)
    assert place(datetime(2027, 10, 3, 2, 10), ZoneInfo("Australia/Lord_Howe")) == utc(2027, 10, 2, 15, 30)


@pytest.mark.parametrize(("expr", "message"), [("0 9 * *", "five fields"), ("61 9 * * *", "five fields"),
                                               ("0 0 30 2 *", "no occurrence")])
def test_a_bad_expression_is_refused_saying_why(expr: str, message: str):
    with pytest.raises(ValueError, match=message):
        next_occurrence(expr, "UTC", utc(2026, 12, 7))


def test_an_unknown_zone_is_refused():
    with pytest.raises(ValueError, match="IANA"):
        next_occurrence("0 9 * * 1", "Mars/Olympus", utc(2026, 12, 7))


def test_an_occurrence_has_one_id_whatever_the_offset_it_is_written_with():
    at = utc(2026, 12, 14, 0)
    assert occurrence_id("weekly", "u1", at) == occurrence_id("weekly", "u1", at.astimezone(ZoneInfo("Asia/Tokyo")))
    assert occurrence_id("weekly", "u1", at) == "r:weekly:u1:20261214T000000Z"
