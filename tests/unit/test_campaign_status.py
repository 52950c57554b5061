"""`herald campaign status` numbers from (status, reason, count) rows."""
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
