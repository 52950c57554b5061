"""Pure status folding: a batch of status changes → the history to append and one winning update per notification."""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from schemas.records import StatusChange, Time, epoch_ms
from schemas.vocabulary import RANK, Status


@dataclass(slots=True)   # not frozen: one per notification a batch moves, and a frozen init costs 3x (treated as immutable)
class NotificationUpdate:
    id: str
    event_id: str
    event_type: str
    user_id: str
    template: str | None
    category: str | None
    campaign_id: str | None
    status: Status
    rank: int
    reason: str | None
    at_ms: int   # epoch milliseconds
    trace_id: str | None = None   # the first one the notification's changes name


@dataclass(frozen=True, slots=True)
class Fold:
    history: list[StatusChange]       # every change, in batch order
    updates: list[NotificationUpdate]  # per notification its highest-ranked change, sorted by id


def as_datetime(at: Time) -> datetime:
    return at if isinstance(at, datetime) else datetime.fromtimestamp(at / 1000, UTC)


def fold(changes: list[StatusChange]) -> Fold:
    """History for every change; per notification the highest-ranked change (the first one on ties), with the
    first trace id its changes name (in batch order).

    Updates are sorted by notification id so that concurrent writers lock rows in one order.
    The batch's winner still has to beat the stored rank: the store's guard, not this fold, keeps a
    later batch from moving a notification backwards.
    """
    best: dict[str, NotificationUpdate] = {}
    for change in changes:
        rank = RANK[change.status]
        current = best.get(change.notification_id)
        if current is None or rank > current.rank:
            trace = change.trace_id if current is None or current.trace_id is None else current.trace_id
            best[change.notification_id] = NotificationUpdate(
                change.notification_id, change.event_id, change.event_type, change.user_id, change.template,
                change.category, change.campaign_id, change.status, rank, change.reason, epoch_ms(change.at), trace,
            )
        elif current.trace_id is None and change.trace_id is not None:
            best[change.notification_id] = replace(current, trace_id=change.trace_id)
    return Fold(list(changes), sorted(best.values(), key=lambda update: update.id))
