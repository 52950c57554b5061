"""`herald campaign status` numbers from (status, reason, count) rows, and the campaign view built from them."""
from __future__ import annotations

from producers.campaign_status import summarize


def test_summary_folds_statuses_into_what_a_campaign_owner_reads():
    rows = [
        ("sent", "", 500), ("delivered", "", 300), ("opened", "", 50), ("clicked", "", 10), ("bounced", "hard", 5),
        ("suppressed", "preferences:marketing", 40), ("suppressed", "muted", 7), ("skipped", "no_address", 12),
        ("expired", "ttl", 1), ("rate_limited", "email:day", 20), ("failed", "Permanent", 3),
        ("dead_lettered", "render", 2), ("queued", "", 30), ("scheduled", "", 4),
    ]
    s = summarize(rows, total=1_000, produced=1_000)
    assert s.accounted == 984 and s.in_flight == 16
    assert s.sent == 865 and s.delivered == 360 and s.opened == 60 and s.bounced == 5
    assert dict(s.suppressed) == {"suppressed: preferences:marketing": 40, "suppressed: muted": 7,
                                  "skipped: no_address": 12, "expired: ttl": 1}
    assert s.suppressed_total == 60
    assert (s.rate_limited, s.failed, s.dead_lettered) == (20, 3, 2)
    assert dict(s.pending) == {"queued": 30, "scheduled": 4}


def test_nothing_routed_yet_is_all_in_flight():
    s = summarize([], total=10, produced=6)
    assert (s.accounted, s.in_flight, s.sent) == (0, 6, 0)


def test_an_unknown_status_is_still_accounted():
    s = summarize([("archived", "", 3)], total=3, produced=3)
    assert s.in_flight == 0 and dict(s.pending) == {"archived": 3}


def test_the_campaign_view_the_api_and_the_console_show_is_the_summary_of_its_rows():
    from datetime import UTC, datetime

    from producers.api.views import campaign_view

    row = ("c1", "produced", "sale", "marketing", ["email"], 7, 6, None, None, datetime(2026, 3, 1, tzinfo=UTC), None, None,
           600, "09:00-18:00")
    v = campaign_view(row, [("sent", "", 2), ("bounced", "hard", 1), ("suppressed", "muted", 1), ("failed", "Permanent", 1),
                            ("queued", "", 1)])
    # 5 of 7 at an end (3 sent, one of them bounced, 1 suppressed, 1 failed); the queued one is accounted, not in flight
    assert (v.sent, v.bounced, v.finished, v.in_flight, v.progress) == (3, 1, 5, 0, 0.7143)
    assert v.suppressed == {"suppressed: muted": 1} and v.pending == {"queued": 1} and v.failed == 1
    assert (v.id, v.channels, v.total, v.produced, v.rate_per_minute, v.send_window) == ("c1", ["email"], 7, 6, 600, "09:00-18:00")
