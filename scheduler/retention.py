"""What the scheduler's housekeeping purges: each table's age column and window (``settings.retention``).

A row goes once its age column is older than its table's window; a DELETE takes at most ``batch_rows`` rows,
oldest first (one short transaction each), and a run at most ``max_batches`` of them per table, so a backlog
is worked off over several runs and never holds a long lock. The age is checked again by the DELETE itself: a
row touched between the pick and the delete (a delivery claimed again) stays.

The dedup claims and the ledger are the exactly-once guards: an event replayed after its claim was purged, or
a delivery replayed after its ledger row was purged, is taken for new and may be sent again. Their windows
should cover the longest replay anyone will do (the work topics keep 7 days, the DLQ 30: the defaults match).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from infra.settings import RetentionConfig


class Kept(StrEnum):
    """The tables with a retention window (the names of ``settings.retention``'s ``<name>_days`` fields)."""

    DEDUP = "dedup"
    LEDGER = "ledger"
    IDEMPOTENCY = "idempotency"
    STATUS_HISTORY = "status_history"
    PUBLISHED = "published"
    CANCELED = "canceled"
    CANCELLATIONS = "cancellations"
    DIGESTS = "digests"


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    key: str        # the primary key column(s)
    age: str        # the timestamp a row's age is measured from (indexed: migration 010)
    where: str = "TRUE"


TABLES: dict[Kept, Table] = {
    Kept.DEDUP: Table("dedup", "event_id, channel", "created_at"),
    # the last change: a claim, a retry's attempt, the 'sent' mark
    Kept.LEDGER: Table("deliveries", "delivery_id", "updated_at"),
    Kept.IDEMPOTENCY: Table("api_idempotency", "api_key_id, key", "created_at"),
    Kept.STATUS_HISTORY: Table("status_history", "id", "at"),
    # rows not yet published are work, never purged
    Kept.PUBLISHED: Table("scheduled", "id", "published_at", "published_at IS NOT NULL"),
    # canceled before they were published (migration 014): never to be published, kept for inspection
    Kept.CANCELED: Table("scheduled", "id", "canceled_at", "canceled_at IS NOT NULL AND published_at IS NULL"),
    Kept.CANCELLATIONS: Table("cancellations", "kind, key", "canceled_at"),
    # a closed window and (ON DELETE CASCADE) its events; an open one is work
    Kept.DIGESTS: Table("digest_windows", "id", "closed_at", "closed_at IS NOT NULL"),
}


def purge_sql(t: Table) -> str:
    """One bounded batch: parameters (days, batch_rows, days)."""
    old = f"{t.where} AND {t.age} < now() - make_interval(days => %s)"
    return (f"DELETE FROM {t.name} WHERE ({t.key}) IN "
            f"(SELECT {t.key} FROM {t.name} WHERE {old} ORDER BY {t.age} LIMIT %s) "
            f"AND {t.where} AND {t.age} < now() - make_interval(days => %s)")


def window_days(retention: RetentionConfig, kept: Kept) -> int:
    """The table's window in days; 0: kept forever."""
    days: int = getattr(retention, f"{kept}_days")
    return days


def drain(delete_batch: Callable[[], int], batch_rows: int, max_batches: int) -> int:
    """Run ``delete_batch`` until one removes fewer than ``batch_rows`` rows, at most ``max_batches`` times."""
    total = 0
    for _ in range(max_batches):
        n = delete_batch()
        total += n
        if n < batch_rows:
            break
    return total
