"""Import rows: what is accepted, what is rejected with which reason, and what absent vs. empty fields mean."""
from __future__ import annotations

import re
from datetime import time

import pytest

from producers.users_rows import PRESENT_BIT, Prefs, Rejected, UserRow, read_csv, read_jsonl, validate

TOKEN = "f" * 120


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({}, "no id"),
        ({"id": "  "}, "no id"),
        ({"id": "has space"}, "may hold only"),
        ({"id": "u1", "email": "not-an-email"}, "not an email address"),
        ({"id": "u1", "phone": "0660 123"}, "E.164"),
        ({"id": "u1", "locale": "german"}, "not a locale"),
        ({"id": "u1", "time_zone": "Mars/Olympus"}, "IANA time zone"),
        ({"id": "u1", "devices": [{"platform": "nokia", "token": TOKEN}]}, "unknown platform"),
        ({"id": "u1", "devices": "android:short"}, "FCM registration token"),
        ({"id": "u1", "devices": [{"platform": "android", "token": "ab" * 32}]}, "looks like an APNs device token"),
        ({"id": "u1", "devices": f"web:{'0f' * 32}"}, "only an ios device has"),
        ({"id": "u1", "devices": f"ios:{'z' * 64}"}, "an ios token is an APNs device token"),
        ({"id": "u1", "devices": ["tokenwithoutplatform"]}, "platform:token"),
        ({"id": "u1", "preferences": {"quiet_start": "22:00"}}, "both quiet_start and quiet_end"),
        ({"id": "u1", "preferences": {"quiet_start": "25:00", "quiet_end": "07:00"}}, "not a time of day"),
        ({"id": "u1", "preferences": {"channels": {"fax": False}}}, "unknown channel 'fax'"),
        ({"id": "u1", "preferences": {"muted": "maybe"}}, "true or false"),
        ({"id": "u1", "preferences": {"loud": True}}, "unknown key(s) loud"),
        ({"id": "u1", "preferences": "{not json"}, "not JSON"),
        ({"id": "u1", "email": ["a@b.co"]}, "email must be text"),
    ],
)
def test_rejections_say_why(raw, reason):
    out = validate(7, raw)
    assert isinstance(out, Rejected) and out.line == 7
    assert reason in out.reason


def test_a_full_row():
    out = validate(3, {
        "id": "u1", "email": "ada@example.com", "phone": "+436601234567", "locale": "de-AT", "time_zone": "Europe/Vienna",
        "first_name": "Ada", "devices": [{"platform": "android", "token": TOKEN}, f"ios:{'a' * 64}"],
        "preferences": {"muted": False, "channels": {"sms": False}, "categories": {"marketing": False},
                        "quiet_start": "22:00", "quiet_end": "7:30"},
    })
    assert out == UserRow(3, "u1", 31, "ada@example.com", "+436601234567", "de-AT", "Europe/Vienna", "Ada",
                          (("android", TOKEN), ("ios", "a" * 64)),
                          Prefs(False, {"sms": False}, {"marketing": False}, time(22, 0), time(7, 30)))


def test_absent_fields_are_not_present_and_empty_ones_are():
    only_email = validate(1, {"id": "u1", "email": "a@b.co"})
    assert only_email.present == PRESENT_BIT["email"]
    cleared = validate(1, {"id": "u1", "phone": ""})
    assert cleared.present == PRESENT_BIT["phone"] and cleared.phone is None


def test_timezone_is_an_accepted_spelling():
    assert validate(1, {"id": "u1", "timezone": "Asia/Tokyo"}).time_zone == "Asia/Tokyo"


def test_csv_rows_with_devices_and_json_preferences():
    lines = [
        "id,email,time_zone,devices,preferences\n",
        f'u1,a@b.co,Europe/Vienna,android:{TOKEN} web:{TOKEN}x,"{{""muted"": true}}"\n',
        "u2,bad,UTC,,\n",
        "u3,c@d.co\n",
        "\n",
        "u4,,,,\n",
    ]
    out = list(read_csv(lines))
    assert out[0].devices == (("android", TOKEN), ("web", TOKEN + "x")) and out[0].prefs.muted is True
    assert out[1] == Rejected(3, "'bad' is not an email address")
    assert out[2] == Rejected(4, "2 columns, the header has 5")
    assert out[3].id == "u4" and out[3].email is None and out[3].prefs is None
    assert len(out) == 4


@pytest.mark.parametrize(
    ("header", "message"),
    [("email,phone\n", "needs an id column"), ("id,emial\n", "unknown CSV column(s) emial")],
)
def test_csv_headers_are_checked_before_any_row(header, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        list(read_csv([header, "x,y\n"]))


def test_json_lines():
    out = list(read_jsonl(['{"id": "u1"}\n', "\n", "oops\n", "[1]\n", '{"id": "u2", "nickname": "x"}\n']))
    assert out[0].id == "u1"
    assert [(r.line, r.reason.split(":")[0]) for r in out[1:]] == [
        (3, "not JSON"), (4, "not a JSON object"), (5, "unknown key(s) nickname")]
