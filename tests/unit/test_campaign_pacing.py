"""Campaign send windows and pacing, without a network: the window stage and the route handler over the twins with
a fixed clock, the producer's pacer with a fake one."""
from __future__ import annotations

import asyncio
import json
import threading
from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest

from infra.kafka.dead_letters import ERROR_TEXT
from infra.kafka.records import InRecord
from producers import campaign as cp
from producers.campaign_source import Recipient as Row
from streams.stages.route.recipient import Recipient
from streams.stages.route.timing import next_allowed, window_opens
from streams.stages.route.window import parse_window
from tests.unit.test_route_handler import MemoryRouteEnv, decoded, statuses


def ms(text: str, tz: str = "UTC") -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def test_a_window_is_parsed_or_refused_naming_the_problem():
    assert parse_window("09:00-18:00") == (time(9), time(18))
    assert parse_window(" 22:00 - 02:30:15 ") == (time(22), time(2, 30, 15))
    for bad, needle in [("9-18", "expected HH:MM-HH:MM"), ("09:00", "expected"), ("09:00-09:00", "starts where it ends"),
                        ("25:00-26:00", "expected"), ("09:00+01:00-18:00", "no UTC offset")]:
        with pytest.raises(ValueError, match=needle):
            parse_window(bad)


@pytest.mark.parametrize("now,tz,window,opens", [
    ("2026-03-02T07:30", "Europe/Vienna", "09:00-18:00", "2026-03-02T09:00"),   # 08:30 in Vienna: waits half an hour
    ("2026-03-02T10:00", "Europe/Vienna", "09:00-18:00", None),                 # 11:00 there: inside
    ("2026-03-02T17:00", "Europe/Vienna", "09:00-18:00", "2026-03-03T09:00"),   # 18:00 there: the end is outside
    ("2026-03-02T07:30", "America/New_York", "09:00-18:00", "2026-03-02T09:00"),  # 02:30 there
    ("2026-03-02T12:00", "UTC", "22:00-02:00", "2026-03-02T22:00"),             # a window over midnight
    ("2026-03-02T23:30", "UTC", "22:00-02:00", None),
    ("2026-03-02T01:59", "UTC", "22:00-02:00", None),
    ("2026-03-02T12:00", "Not/AZone", "09:00-18:00", None),                     # an unknown zone counts as UTC
])
def test_the_window_opens_in_the_recipients_own_zone(now, tz, window, opens):
    got = window_opens(ms(now), tz, parse_window(window))
    assert got == (ms(opens, tz) if opens else None)


def test_route_defers_recipients_outside_the_window_to_its_opening_and_sends_the_others(monkeypatch):
    now = ms("2026-03-02T07:30")   # Vienna 08:30, New York 02:30, Tokyo 16:30
    monkeypatch.setattr("streams.handlers.route.now_ms", lambda: now)
    env = MemoryRouteEnv()
    env.settings = env.settings.model_copy(update={"bulk_share_min_bytes": 0})   # the seed template's parts shared
    zones = {"vie": "Europe/Vienna", "nyc": "America/New_York", "tyo": "Asia/Tokyo"}
    for uid, tz in zones.items():
        env.stores.recipients.add(Recipient(uid, email=f"{uid}@example.test", time_zone=tz))  # type: ignore[attr-defined]
    chunk = {"chunk_id": "cw:0", "occurred_at": now, "campaign_id": "cw", "template": "weekly_digest",
             "channels": ["email"], "category": "marketing", "variables_json": json.dumps({"headline": "Hi"}),
             "user_ids": list(zones), "user_variables_json": [], "send_window": "09:00-18:00"}
    rec = InRecord(env.settings.topic("bulk"), 0, 1, b"chunk", env.codec.encode("CampaignChunk", chunk))
    out = asyncio.run(env.handler().handle([rec]))
    assert [d["user_id"] for d in decoded(env, out, "Delivery")] == ["tyo"]
    for uid in ("vie", "nyc"):
        assert statuses(env, out, f"cw:{uid}") == [("email", "deferred", "send_window")]
    rows = {r.notification_id: r for r in env.stores.scheduled.rows.values()}  # type: ignore[attr-defined]
    assert {n: (r.kind, r.topic, r.due_ms) for n, r in rows.items()} == {
        "cw:vie": ("send_window", env.settings.topic("deliver.email.bulk"), ms("2026-03-02T09:00", "Europe/Vienna")),
        "cw:nyc": ("send_window", env.settings.topic("deliver.email.bulk"), ms("2026-03-02T09:00", "America/New_York")),
    }
    # what the scheduler publishes when the window opens: the rendered delivery, never dropped
    held = env.codec.decode(rows["cw:vie"].value)
    assert held.name == "Delivery" and held.record["address"] == "vie@example.test"
    # whole, though its chunk mates travel with the template's parts shared: a held delivery stands alone
    assert held.record["subject"] == "Your weekly digest" and held.record["text"].startswith("Hi there,\n\nHi")
    assert held.record["html"].startswith("<p>Hi there,</p><p>Hi</p>")


def test_a_chunk_with_an_unreadable_window_is_a_dead_letter_naming_it():
    env = MemoryRouteEnv()
    chunk = {"chunk_id": "cx:0", "occurred_at": 0, "campaign_id": "cx", "template": "weekly_digest",
             "channels": ["email"], "category": "marketing", "variables_json": "{}", "user_ids": ["a"],
             "user_variables_json": [], "send_window": "soon"}
    rec = InRecord(env.settings.topic("bulk"), 0, 2, b"chunk", env.codec.encode("CampaignChunk", chunk))
    [letter] = asyncio.run(env.handler().handle([rec]))
    assert letter.topic == env.settings.topic("dlq") and b"send window: expected HH:MM-HH:MM" in dict(letter.headers)[ERROR_TEXT]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeStop(threading.Event):
    """A stop event whose wait advances the fake clock instead of sleeping."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        self.clock.now += timeout
        return self.is_set()


def test_the_pacer_lets_the_nth_message_go_no_earlier_than_n_over_the_rate():
    clock = FakeClock()
    pacer, stop = cp.Pacer(120, clock), FakeStop(clock)   # 2 a second
    sent_at = []
    for _ in range(5):
        assert pacer.wait(4, stop)
        sent_at.append(clock.now - 100.0)
    assert sent_at == [0.0, 2.0, 4.0, 6.0, 8.0]
    clock.now += 60   # idle a minute: the next goes at once (no burst credit beyond its own schedule)
    assert pacer.wait(4, stop) and stop.waits == [2.0, 2.0, 2.0, 2.0]
    stop.set()
    clock.now -= 60
    assert not pacer.wait(4, stop)   # a stop while waiting its turn: not sent


def test_paced_records_hold_two_seconds_and_chunks_ten_seconds_of_the_rate():
    assert cp.paced_sizes(None, 500, 20_000) == (500, 20_000)
    assert cp.paced_sizes(60, 500, 20_000) == (2, 10)
    assert cp.paced_sizes(600, 500, 20_000) == (20, 100)
    assert cp.paced_sizes(10, 500, 20_000) == (1, 1)
    assert cp.paced_sizes(6_000_000, 500, 20_000) == (500, 20_000)


def test_the_spec_checks_rate_and_window_and_the_chunk_carries_the_window():
    with pytest.raises(ValueError, match="expected HH:MM-HH:MM"):
        cp.CampaignSpec("c", "t", {}, send_window="nine to five")
    with pytest.raises(ValueError, match="at least 1 message per minute"):
        cp.CampaignSpec("c", "t", {}, rate_per_minute=0)
    spec = cp.CampaignSpec("c", "t", {}, send_window="09:00-18:00", rate_per_minute=60)
    assert cp.chunk_record(spec, 0, [Row("u1")], 0, "{}")["send_window"] == "09:00-18:00"
    assert cp.chunk_record(cp.CampaignSpec("c", "t", {}), 0, [Row("u1")], 0, "{}")["send_window"] is None


def test_a_v1_chunk_without_a_window_is_still_read():
    env = MemoryRouteEnv()
    v1 = {"chunk_id": "c:0", "occurred_at": 0, "campaign_id": "c", "template": "t", "channels": ["email"],
          "category": "marketing", "variables_json": "{}", "user_ids": ["u"], "user_variables_json": []}
    decoded_v1 = env.codec.decode(env.codec.encode("CampaignChunk", v1, version=1))
    assert decoded_v1.version == 1 and decoded_v1.record["send_window"] is None


@pytest.mark.parametrize("now,quiet,window,expect", [
    ("05:30", (22, 7), "06:00-06:45", ("02T07:00", "quiet_hours")),   # the window lies inside the quiet hours:
    ("12:00", (22, 7), "06:00-06:45", None),                          # quiet hours win (when they end, or now)
    ("05:30", (22, 7), "06:00-08:00", ("02T07:00", "quiet_hours")),   # quiet until 07:00, the window open by then
    ("05:30", (22, 6), "06:30-08:00", ("02T06:30", "send_window")),   # quiet until 06:00, the window opens 06:30
    ("08:15", (8, 9), "07:00-08:30", ("03T07:00", "send_window")),    # quiet past the window's end: tomorrow's
    ("07:50", (8, 9), "07:00-08:30", None),                           # in the window, not quiet: now
    ("12:00", None, "09:00-18:00", None),
])
def test_the_window_and_the_quiet_hours_together_wait_for_a_time_both_allow(now, quiet, window, expect):
    qs, qe = (time(quiet[0]), time(quiet[1])) if quiet else (None, None)
    got = next_allowed(ms(f"2026-03-02T{now}"), "UTC", parse_window(window), qs, qe)
    assert got == ((ms(f"2026-03-{expect[0]}"), expect[1]) if expect else None)


def test_route_defers_a_push_to_a_time_the_window_and_the_quiet_hours_both_allow(monkeypatch):
    now = ms("2026-03-02T05:30")
    monkeypatch.setattr("streams.handlers.route.now_ms", lambda: now)
    env = MemoryRouteEnv()
    env.stores.recipients.add(Recipient("q", devices=["tok-q"], time_zone="UTC",  # type: ignore[attr-defined]
                                        quiet_start=time(22), quiet_end=time(6)))
    chunk = {"chunk_id": "cq:0", "occurred_at": now, "campaign_id": "cq", "template": "weekly_digest",
             "channels": ["push"], "category": "marketing", "variables_json": "{}", "user_ids": ["q"],
             "user_variables_json": [], "send_window": "06:30-08:00"}
    rec = InRecord(env.settings.topic("bulk"), 0, 3, b"chunk", env.codec.encode("CampaignChunk", chunk))
    out = asyncio.run(env.handler().handle([rec]))
    assert statuses(env, out, "cq:q") == [("push", "deferred", "send_window")]
    [row] = env.stores.scheduled.rows.values()  # type: ignore[attr-defined]
    assert row.due_ms == ms("2026-03-02T06:30")
