"""Pure status folding: a batch of StatusChange records → history rows and one winning update per notification."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streams.stages.status_change import RANK


@dataclass(frozen=True, slots=True)
class NotificationUpdate:
    id: str
    event_id: str
    event_type: str
    user_id: str
    template: str | None
    category: str | None
    campaign_id: str | None
    status: str
    rank: int
    reason: str | None
    at: datetime


def history_row(c: dict[str, Any]) -> tuple:
    return (c["notification_id"], c["channel"], c["status"], c["reason"], c["delivery_id"], c["provider_message_id"], c["at"])


def fold(changes: list[dict[str, Any]]) -> tuple[list[tuple], list[NotificationUpdate]]:
    """History rows for every change; per notification the highest-ranked change (the first one on ties)."""
    best: dict[str, NotificationUpdate] = {}
    for c in changes:
        rank = RANK[c["status"]]
        cur = best.get(c["notification_id"])
        if cur is None or rank > cur.rank:
            best[c["notification_id"]] = NotificationUpdate(
                c["notification_id"], c["event_id"], c["event_type"], c["user_id"], c["template"], c["category"],
                c["campaign_id"], c["status"], rank, c["reason"], c["at"],
            )
    return [history_row(c) for c in changes], list(best.values())
