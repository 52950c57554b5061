"""herald users import: rows land in users, devices and preferences; bad lines are named; re-runs change nothing; caches are dropped."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import redis

from producers.users_import import import_users, rows_of
from streams.stores.recipients import recipient_key
from tests.support.env import settings_env

pytestmark = pytest.mark.integration

TOKEN = "A" * 120


def herald(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings_env(settings), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "infra.tools.cli.main", *args], env=env, capture_output=True, text=True, timeout=120)


def test_csv_import_then_rerun_then_changes(settings, db, tmp_path):
    t = settings.app_id
    f = tmp_path / "users.csv"
    f.write_text(
        "id,email,phone,locale,time_zone,first_name,devices,preferences\n"
        f'{t}-1,ada@example.com,+436601234567,de-AT,Europe/Vienna,Ada,android:{TOKEN}1,'
        '"{""channels"": {""sms"": false}, ""quiet_start"": ""22:00"", ""quiet_end"": ""07:00""}"\n'
        f"{t}-2,bob@example.com,,en,America/New_York,Bob,,\n"
        f"{t}-3,not-an-email,,en,UTC,,,\n"
        f"{t}-4,dan@example.com,,en,Nowhere/City,,,\n"
        f"{t}-5,eve@example.com,,,,,ios:{'b' * 64},\n"
    )
    rejects = tmp_path / "rejects.tsv"
    out = herald(settings, "users", "import", str(f), "--rejects", str(rejects))
    assert out.returncode == 0, out.stderr
    said = " ".join(out.stderr.split())
    assert "line 4: 'not-an-email' is not an email address" in said
    assert "line 5: 'Nowhere/City' is not an IANA time zone" in said
    assert "3 new, 0 updated, 0 unchanged" in said and "2 rejected" in said
    assert rejects.read_text().splitlines() == [
        "4\t'not-an-email' is not an email address", "5\t'Nowhere/City' is not an IANA time zone (like Europe/Vienna)"]

    users = {r[0]: r[1:] for r in db.execute(
        "SELECT id, email, phone, locale, time_zone, first_name FROM users WHERE id LIKE %s", (f"{t}-%",))}
    assert users == {
        f"{t}-1": ("ada@example.com", "+436601234567", "de-AT", "Europe/Vienna", "Ada"),
        f"{t}-2": ("bob@example.com", None, "en", "America/New_York", "Bob"),
        f"{t}-5": ("eve@example.com", None, "en", "UTC", None),
    }
    assert db.execute("SELECT user_id, platform, active FROM devices WHERE token = %s", (TOKEN + "1",)).fetchone() == (f"{t}-1", "android", True)
    prefs = db.execute("SELECT channels, quiet_start::text, quiet_end::text FROM preferences WHERE user_id = %s", (f"{t}-1",)).fetchone()
    assert prefs == ({"sms": False}, "22:00:00", "07:00:00")

    stamp = db.execute("SELECT max(updated_at) FROM users WHERE id LIKE %s", (f"{t}-%",)).fetchone()[0]
    again = herald(settings, "users", "import", str(f))
    assert again.returncode == 0, again.stderr
    assert "0 new, 0 updated, 3 unchanged" in " ".join(again.stderr.split())
    assert "devices 2 (0 new); preferences changed 0" in " ".join(again.stderr.split())
    assert db.execute("SELECT max(updated_at) FROM users WHERE id LIKE %s", (f"{t}-%",)).fetchone()[0] == stamp
    assert db.execute("SELECT count(*) FROM devices WHERE user_id LIKE %s", (f"{t}-%",)).fetchone()[0] == 2


def test_updates_keep_absent_fields_move_tokens_and_drop_cached_recipients(settings, db, tmp_path):
    t = settings.app_id
    r = redis.Redis.from_url(settings.redis_dsn)
    first = tmp_path / "a.jsonl"
    first.write_text("\n".join(json.dumps(x) for x in [
        {"id": f"{t}-a", "email": "a@example.com", "phone": "+15005550006", "first_name": "A",
         "devices": [{"platform": "android", "token": TOKEN + "a"}]},
        {"id": f"{t}-b", "email": "b@example.com"},
        {"id": f"{t}-c", "email": "c@example.com", "devices": [f"web:{TOKEN}c"]},
    ]) + "\n")
    with __import__("psycopg").connect(settings.dsn, autocommit=True) as conn:
        import_users(conn, rows_of(first))
    db.execute("UPDATE users SET email_undeliverable = true WHERE id = %s", (f"{t}-a",))
    db.execute("UPDATE devices SET active = false, deactivated_reason = 'unregistered' WHERE token = %s", (TOKEN + "c",))
    for u in ("a", "b", "c"):
        r.set(recipient_key(settings, f"{t}-{u}"), b"cached", ex=300)

    second = tmp_path / "b.jsonl"
    second.write_text("\n".join(json.dumps(x) for x in [
        {"id": f"{t}-a", "email": "a2@example.com"},                                     # phone, name absent: kept
        {"id": f"{t}-b", "email": "b@example.com", "devices": [f"android:{TOKEN}a"]},   # a's token moves to b
        {"id": f"{t}-c", "email": "c@example.com", "devices": [f"web:{TOKEN}c"]},       # same owner: stays off
        {"id": f"{t}-d", "email": "d@example.com"},
        {"id": f"{t}-d", "email": "d2@example.com"},                                     # repeated: the last wins
    ]) + "\n")
    out = herald(settings, "users", "import", str(second))
    assert out.returncode == 0, out.stderr
    said = " ".join(out.stderr.split())
    assert "1 new, 1 updated, 2 unchanged" in said and "1 repeated ids" in said

    a = db.execute("SELECT email, phone, first_name, email_undeliverable FROM users WHERE id = %s", (f"{t}-a",)).fetchone()
    assert a == ("a2@example.com", "+15005550006", "A", False)  # a new address is deliverable again
    assert db.execute("SELECT email FROM users WHERE id = %s", (f"{t}-d",)).fetchone()[0] == "d2@example.com"
    assert db.execute("SELECT user_id, active FROM devices WHERE token = %s", (TOKEN + "a",)).fetchone() == (f"{t}-b", True)
    assert db.execute("SELECT active, deactivated_reason FROM devices WHERE token = %s", (TOKEN + "c",)).fetchone() == (False, "unregistered")
    # a (changed), b (got a device) lost their cache entries; c changed nothing and keeps it
    assert r.get(recipient_key(settings, f"{t}-a")) is None
    assert r.get(recipient_key(settings, f"{t}-b")) is None
    assert r.get(recipient_key(settings, f"{t}-c")) == b"cached"
    r.delete(recipient_key(settings, f"{t}-c"))
    r.close()


def test_bulk_jsonl_counts(settings, db, tmp_path):
    t = settings.app_id
    f = tmp_path / "many.jsonl"
    with f.open("w") as out:
        for i in range(20_000):
            out.write(json.dumps({"id": f"{t}-m{i}", "email": f"m{i}@example.com", "time_zone": "Asia/Tokyo"}) + "\n")
        out.write('{"id": "x", "time_zone": "Asia/Atlantis"}\n')
    with __import__("psycopg").connect(settings.dsn, autocommit=True) as conn:
        report = import_users(conn, rows_of(f))
    assert (report.read, report.valid, report.inserted, report.rejected_count) == (20_001, 20_000, 20_000, 1)
    assert report.rejected[0].line == 20_001
    assert db.execute("SELECT count(*) FROM users WHERE id LIKE %s AND time_zone = 'Asia/Tokyo'", (f"{t}-m%",)).fetchone()[0] == 20_000


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("u.txt", "id\nx\n", "give a .csv or .jsonl file"),
        ("u.csv", "email\na@b.co\n", "needs an id column"),
    ],
)
def test_unreadable_files_get_one_clear_line(settings, tmp_path, name, text, message):
    f = tmp_path / name
    f.write_text(text)
    out = herald(settings, "users", "import", str(f))
    assert out.returncode == 1
    assert message in " ".join(out.stderr.split()) and "Traceback" not in out.stderr


def test_the_platform_is_stored_and_a_token_of_the_wrong_service_is_a_rejected_line(settings, db, tmp_path):
    t = settings.app_id
    apns = "c3" * 32
    f = tmp_path / "devices.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [
        {"id": f"{t}-ios", "devices": [{"platform": "ios", "token": apns}, {"platform": "android", "token": TOKEN + "x"}]},
        {"id": f"{t}-wrong", "devices": [{"platform": "android", "token": "d4" * 32}]},
    ]) + "\n")
    out = herald(settings, "users", "import", str(f))
    assert out.returncode == 0, out.stderr
    said = " ".join(out.stderr.split())
    assert "line 2: device: this looks like an APNs device token (64 hex characters)" in said and "1 rejected" in said
    rows = dict(db.execute("SELECT token, platform FROM devices WHERE user_id = %s", (f"{t}-ios",)).fetchall())
    assert rows == {apns: "ios", TOKEN + "x": "android"}
    assert db.execute("SELECT count(*) FROM users WHERE id = %s", (f"{t}-wrong",)).fetchone()[0] == 0
