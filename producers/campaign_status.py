"""How far a campaign has got, from the status data the status agent writes (``notifications``).

``summarize`` is pure: it folds ``(status, reason, count)`` rows of one
campaign's notifications into the numbers ``herald campaign status`` shows.
A notification's status is its furthest one (it never moves backwards), so
"sent" counts everything that reached a provider, including what was later
delivered, opened, clicked or bounced.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import psycopg

SENT = ("sent", "delivered", "opened", "clicked", "bounced")
SUPPRESSED = ("suppressed", "skipped", "expired")
PENDING = ("queued", "scheduled", "deferred")

STATUS_COUNTS = """
SELECT status, COALESCE(reason, ''), count(*) FROM notifications WHERE campaign_id = %s GROUP BY 1, 2
"""
# the same for several campaigns at once (a list page), each row led by its campaign id
STATUS_COUNTS_OF = """
SELECT campaign_id, status, COALESCE(reason, ''), count(*) FROM notifications WHERE campaign_id = ANY(%s) GROUP BY 1, 2, 3
"""


@dataclass
class CampaignSummary:
    total: int
    produced: int
    accounted: int = 0                          # notifications with a status row
    sent: int = 0
    delivered: int = 0                          # delivered, opened or clicked
    opened: int = 0                             # opened or clicked
    bounced: int = 0
    suppressed: Counter = field(default_factory=Counter)   # "status: reason" → count
    rate_limited: int = 0
    failed: int = 0
    dead_lettered: int = 0
    canceled: int = 0
    pending: Counter = field(default_factory=Counter)      # queued, scheduled, deferred

    @property
    def in_flight(self) -> int:
        """Produced but not yet seen by the status agent (still in Kafka, or being routed)."""
        return max(0, self.produced - self.accounted)

    @property
    def suppressed_total(self) -> int:
        return sum(self.suppressed.values())

    @property
    def finished(self) -> int:
        """Notifications at an end: sent (or further), suppressed, rate-limited, failed, dead-lettered, canceled."""
        return self.sent + self.suppressed_total + self.rate_limited + self.failed + self.dead_lettered + self.canceled

    @property
    def progress(self) -> float:
        """The share of the recipients whose notification is at an end (0 to 1)."""
        return min(1.0, self.finished / self.total) if self.total else 0.0


def summarize(rows: list[tuple[str, str, int]], total: int, produced: int) -> CampaignSummary:
    s = CampaignSummary(total=total, produced=produced)
    for status, reason, n in rows:
        s.accounted += n
        if status in SENT:
            s.sent += n
            if status in ("delivered", "opened", "clicked"):
                s.delivered += n
            if status in ("opened", "clicked"):
                s.opened += n
            if status == "bounced":
                s.bounced += n
        elif status in SUPPRESSED:
            s.suppressed[f"{status}: {reason}" if reason else status] += n
        elif status == "rate_limited":
            s.rate_limited += n
        elif status == "failed":
            s.failed += n
        elif status == "dead_lettered":
            s.dead_lettered += n
        elif status == "canceled":
            s.canceled += n
        elif status in PENDING:
            s.pending[status] += n
        else:  # a status added later: still accounted, shown as pending rather than lost
            s.pending[status] += n
    return s


def fetch(conn: psycopg.Connection, campaign_id: str, total: int, produced: int) -> CampaignSummary:
    rows = [(st, reason, n) for st, reason, n in conn.execute(STATUS_COUNTS, (campaign_id,))]
    return summarize(rows, total, produced)
