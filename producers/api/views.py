"""The API's read views, each read in one place: ``GET /v1/notifications/{id}``, ``GET /v1/users/{id}/notifications``
and ``GET /v1/campaigns/{id}`` answer with them, and the console (``infra/tools/console``) shows the same ones.

A campaign's counts and progress come from ``producers.campaign_status.summarize`` and nowhere else.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection

from producers.api.models import CampaignView, HistoryEntry, NotificationView
from producers.campaign_status import STATUS_COUNTS, STATUS_COUNTS_OF, summarize

NOTIFICATION_COLUMNS = ("id, event_id, event_type, user_id, template, category, campaign_id, status, reason, created_at, "
                        "updated_at, trace_id")
HISTORY_COLUMNS = "status, channel, reason, delivery_id, provider_message_id, at"
CAMPAIGN_COLUMNS = ("id, status, template, category, channels, total, produced, canceled_at, send_at, created_at, "
                    "finished_at, error, rate_per_minute, send_window")

# a key with a tenant sees the notifications of its tenant's users only; without one (the console too), every one
NOTIFICATION_SQL = f"""
SELECT {NOTIFICATION_COLUMNS} FROM notifications n WHERE id = %s
AND (%s::text IS NULL OR EXISTS (SELECT 1 FROM users u WHERE u.id = n.user_id AND u.tenant = %s::text))
"""
HISTORY_SQL = f"SELECT {HISTORY_COLUMNS} FROM status_history WHERE notification_id = %s ORDER BY at, id LIMIT 1000"


def notification_view(row: Sequence[Any], history: list[HistoryEntry] | None = None) -> NotificationView:
    """A row selected as ``NOTIFICATION_COLUMNS``, as the view."""
    return NotificationView(**dict(zip(NOTIFICATION_COLUMNS.split(", "), row, strict=True)), history=history or [])


async def notification(conn: AsyncConnection[Any], notification_id: str, tenant: str | None = None) -> NotificationView | None:
    """A notification with its whole history (every status change, in order); None when unknown or another tenant's."""
    row = await (await conn.execute(NOTIFICATION_SQL, (notification_id, tenant, tenant))).fetchone()
    if row is None:
        return None
    keys = HISTORY_COLUMNS.split(", ")
    history = await (await conn.execute(HISTORY_SQL, (notification_id,))).fetchall()
    return notification_view(row, [HistoryEntry(**dict(zip(keys, h, strict=True))) for h in history])


def campaign_view(row: Sequence[Any], counts: list[tuple[str, str, int]]) -> CampaignView:
    """A row selected as ``CAMPAIGN_COLUMNS`` and its notifications' ``(status, reason, count)``, as the view."""
    cid, status, template, category, channels, total, produced, canceled_at, send_at, created, finished, error, rate, window = row
    s = summarize(counts, total, produced)
    return CampaignView(
        id=cid, status=status, template=template, category=category, channels=list(channels), total=total,
        produced=produced, in_flight=s.in_flight, sent=s.sent, delivered=s.delivered, bounced=s.bounced,
        suppressed=dict(s.suppressed), rate_limited=s.rate_limited, failed=s.failed, dead_lettered=s.dead_lettered,
        canceled=s.canceled, pending=dict(s.pending), finished=s.finished, progress=round(s.progress, 4),
        canceled_at=canceled_at, send_at=send_at, rate_per_minute=rate, send_window=window, created_at=created,
        finished_at=finished, error=error)


async def campaign(conn: AsyncConnection[Any], campaign_id: str) -> CampaignView | None:
    row = await (await conn.execute(f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = %s", (campaign_id,))).fetchone()
    if row is None:
        return None
    counts = await (await conn.execute(STATUS_COUNTS, (campaign_id,))).fetchall()
    return campaign_view(row, [(st, reason, n) for st, reason, n in counts])


async def campaigns(conn: AsyncConnection[Any], limit: int = 50) -> list[CampaignView]:
    """The newest ``limit`` campaigns, newest first; the counts of all of them in one query."""
    rows = await (await conn.execute(f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns ORDER BY created_at DESC LIMIT %s",
                                     (limit,))).fetchall()
    counts: dict[str, list[tuple[str, str, int]]] = {row[0]: [] for row in rows}
    if counts:
        for cid, st, reason, n in await (await conn.execute(STATUS_COUNTS_OF, (list(counts),))).fetchall():
            counts[cid].append((st, reason, n))
    return [campaign_view(row, counts[row[0]]) for row in rows]
