"""What the console's pages read from PostgreSQL (async, over the API's pool); each function one page's question.

A notification and a campaign are the API's own views (``producers.api.views``: the same query, model and counts as
``GET /v1/notifications/{id}`` and ``GET /v1/campaigns/{id}``); what is here is what only the console asks.

Nothing here writes except ``activate`` (a template version) and the campaign cancel, which go through the same
functions as the CLI and the API (``infra.tools.cli.templates.activate_version``, ``producers.campaign_run.cancel``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from psycopg_pool import AsyncConnectionPool

from producers.api import views
from producers.api.models import CampaignView, NotificationView
from schemas.vocabulary import LedgerStatus, Status

SEARCH_LIMIT = 100

# one query per way to find a notification; each has its index (the primary key, notifications_user,
# notifications_trace_id from migration 015, deliveries_provider_id, status_history_sent_pmid from 020)
SEARCH_SQL = f"""
SELECT {views.NOTIFICATION_COLUMNS} FROM (
    SELECT * FROM notifications WHERE id = %(q)s
    UNION SELECT * FROM notifications WHERE trace_id = %(q)s
    UNION SELECT * FROM (SELECT * FROM notifications WHERE user_id = %(q)s ORDER BY created_at DESC LIMIT %(limit)s) u
    UNION SELECT n.* FROM notifications n JOIN deliveries d ON d.notification_id = n.id WHERE d.provider_message_id = %(q)s
    UNION SELECT n.* FROM notifications n JOIN status_history h ON h.notification_id = n.id
        WHERE h.status = 'sent' AND h.provider_message_id = %(q)s
) found ORDER BY created_at DESC, id LIMIT %(limit)s
"""


@dataclass(frozen=True, slots=True)
class TimelineEvent:
    at: datetime
    what: str                       # a status, or f"ledger: {LedgerStatus.CLAIMED}" / f"ledger: {LedgerStatus.SENT}"
    channel: str | None = None
    reason: str | None = None       # a retry's tier and why, a suppression's reason, a provider's error
    delivery_id: str | None = None
    provider_message_id: str | None = None
    attempts: int | None = None

    @property
    def kind(self) -> str:
        """A CSS class: how the event reads at a glance."""
        if self.what in (Status.SENT, Status.DELIVERED, Status.OPENED, Status.CLICKED, f"ledger: {LedgerStatus.SENT}"):
            return "good"
        if self.what in (Status.FAILED, Status.DEAD_LETTERED, Status.BOUNCED):
            return "bad"
        if self.what in (Status.RETRYING, Status.SUPPRESSED, Status.SKIPPED, Status.RATE_LIMITED, Status.EXPIRED,
                         Status.CANCELED):
            return "warn"
        return "plain"


async def search(db: AsyncConnectionPool, q: str) -> list[NotificationView]:
    """Notifications whose id, trace id, user id or a delivery's provider message id is ``q`` (newest first)."""
    async with db.connection() as conn:
        rows = await (await conn.execute(SEARCH_SQL, {"q": q, "limit": SEARCH_LIMIT})).fetchall()
    return [views.notification_view(r) for r in rows]


async def notification(db: AsyncConnectionPool, nid: str) -> tuple[NotificationView, list[TimelineEvent]] | None:
    """A notification and its timeline: every status change (retries with their tier, receipts) and the ledger's
    claim and send of each delivery (attempts, the provider's message id or error), in time order."""
    async with db.connection() as conn:
        n = await views.notification(conn, nid)
        if n is None:
            return None
        ledger = await (await conn.execute(
            "SELECT delivery_id, channel, status, attempts, provider_message_id, error, claimed_at, sent_at, updated_at "
            "FROM delivery_state WHERE notification_id = %s", (nid,))).fetchall()
    events = [TimelineEvent(h.at, h.status, h.channel, h.reason, h.delivery_id, h.provider_message_id) for h in n.history]
    for did, channel, status, attempts, pmid, error, claimed_at, sent_at, updated_at in ledger:
        events.append(TimelineEvent(claimed_at, f"ledger: {LedgerStatus.CLAIMED}", channel, None, did, None, attempts))
        if sent_at is not None:
            events.append(TimelineEvent(sent_at, f"ledger: {LedgerStatus.SENT}", channel, None, did, pmid, attempts))
        elif status == LedgerStatus.FAILED:
            events.append(TimelineEvent(updated_at, f"ledger: {LedgerStatus.FAILED}", channel, error, did, None, attempts))
    events.sort(key=lambda e: e.at)
    return n, events


# --- overview -----------------------------------------------------------------

OVERVIEW_MINUTES = 60

# the lane is not stored with a notification: a campaign's go the bulk lane, the rest are counted interactive
DELIVERIES_SQL = """
SELECT floor(extract(epoch FROM h.at) / 60)::bigint * 60 AS minute, h.channel,
       CASE WHEN n.campaign_id IS NULL THEN 'interactive' ELSE 'bulk' END AS lane, count(*)
FROM status_history h JOIN notifications n ON n.id = h.notification_id
WHERE h.status = 'sent' AND h.at > now() - make_interval(mins => %s) GROUP BY 1, 2, 3 ORDER BY 1
"""
FAILURES_SQL = """
SELECT status, COALESCE(split_part(reason, ':', 1), ''), count(*) FROM status_history
WHERE status = ANY(%s) AND at > now() - make_interval(mins => %s) GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 20
"""
BACKLOG_SQL = """
SELECT kind, count(*), count(*) FILTER (WHERE due_at <= now()), min(due_at) FROM scheduled
WHERE published_at IS NULL GROUP BY kind ORDER BY kind
"""


@dataclass
class Overview:
    minutes: list[int]                                   # unix seconds of each minute shown
    deliveries: dict[str, list[int]]                     # "email · interactive" → sent per minute
    failures: list[tuple[str, str, int]]                 # (status, reason, count) in the last hour
    backlog: list[tuple[str, int, int, datetime | None]]   # (kind, waiting, overdue, next due)
    now: int


async def overview(db: AsyncConnectionPool, now: float) -> Overview:
    last = int(now // 60) * 60
    minutes = [last - 60 * i for i in range(OVERVIEW_MINUTES - 1, -1, -1)]
    index = {m: i for i, m in enumerate(minutes)}
    deliveries: dict[str, list[int]] = {}
    async with db.connection() as conn:
        for minute, channel, lane, n in await (await conn.execute(DELIVERIES_SQL, (OVERVIEW_MINUTES,))).fetchall():
            if minute in index:
                deliveries.setdefault(f"{channel or '?'} · {lane}", [0] * len(minutes))[index[minute]] += n
        failures = [(s, r, n) for s, r, n in await (await conn.execute(
            FAILURES_SQL, ([Status.FAILED, Status.DEAD_LETTERED, Status.RETRYING, Status.BOUNCED], OVERVIEW_MINUTES))).fetchall()]
        backlog = [tuple(r) for r in await (await conn.execute(BACKLOG_SQL)).fetchall()]
    return Overview(minutes, dict(sorted(deliveries.items())), failures, backlog, int(now))


# --- campaigns ----------------------------------------------------------------

async def campaigns(db: AsyncConnectionPool, limit: int = 50) -> list[CampaignView]:
    async with db.connection() as conn:
        return await views.campaigns(conn, limit)


async def campaign(db: AsyncConnectionPool, cid: str) -> CampaignView | None:
    async with db.connection() as conn:
        return await views.campaign(conn, cid)


CURVE_POINTS = 120


async def delivery_curve(db: AsyncConnectionPool, c: CampaignView, now: datetime) -> tuple[int, list[tuple[int, int]]]:
    """(bucket seconds, [(bucket start, sent in it)]): the campaign's sends over time, at most CURVE_POINTS buckets."""
    end = c.finished_at or now
    bucket = max(1, math.ceil((end - c.created_at).total_seconds() / CURVE_POINTS))
    async with db.connection() as conn:
        rows = await (await conn.execute(
            "SELECT floor(extract(epoch FROM h.at) / %s)::bigint * %s, count(*) FROM status_history h "
            "JOIN notifications n ON n.id = h.notification_id WHERE n.campaign_id = %s AND h.status = 'sent' "
            "GROUP BY 1 ORDER BY 1", (bucket, bucket, c.id))).fetchall()
    return bucket, [(int(t), int(n)) for t, n in rows]


# --- templates ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TemplateVersion:
    code: str
    channel: str
    locale: str
    version: int
    active: bool
    created_at: datetime


async def templates(db: AsyncConnectionPool, code: str | None = None) -> list[TemplateVersion]:
    async with db.connection() as conn:
        rows = await (await conn.execute(
            "SELECT code, channel, locale, version, active, created_at FROM templates "
            "WHERE %(code)s::text IS NULL OR code = %(code)s ORDER BY code, channel, locale, version DESC",
            {"code": code})).fetchall()
    return [TemplateVersion(*r) for r in rows]
