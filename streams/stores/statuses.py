"""Notification statuses in PostgreSQL: ``notifications`` (one row, never moving backwards) and ``status_history``.

``PostgresStatusStore`` owns the SQL; ``MemoryStatusStore`` is its twin with the same interface
(and the same guard) for tests that run without a database.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Protocol

from psycopg_pool import AsyncConnectionPool

from infra.db import pack, pack_ints, packed, packed_ints
from schemas.records import StatusChange, epoch_ms
from schemas.vocabulary import Status
from streams.stages.status_fold import Fold, NotificationUpdate, as_datetime

# One statement for the whole batch (fold gave one update per notification, sorted by id, so concurrent writers lock
# rows in one order). The WHERE is the "never backwards" guard across batches: a stored higher rank wins.
# The trace id is the first non-null one (migration 011): the notification keeps the trace it was accepted with.
# The columns travel packed (``infra.db.pack``): one string each, not an array dumped element by element.
UPSERT_COLUMNS = ("ids", "eids", "types", "users", "templates", "categories", "campaigns", "statuses", "reasons",
                  "traces")
UPSERT = f"""
INSERT INTO notifications AS n (id, event_id, event_type, user_id, template, category, campaign_id,
                                status, status_rank, reason, trace_id, created_at, updated_at)
SELECT u.id, u.event_id, u.event_type, u.user_id, u.template, u.category, u.campaign_id, u.status, u.status_rank,
       u.reason, u.trace_id, to_timestamp(u.at_ms / 1000.0), to_timestamp(u.at_ms / 1000.0)
FROM unnest({", ".join(packed(c) for c in UPSERT_COLUMNS)}, {packed_ints("ranks")}, {packed_ints("ats")})
    AS u(id, event_id, event_type, user_id, template, category, campaign_id, status, reason, trace_id, status_rank, at_ms)
ON CONFLICT (id) DO UPDATE SET
    status = EXCLUDED.status, status_rank = EXCLUDED.status_rank, reason = EXCLUDED.reason,
    updated_at = EXCLUDED.updated_at,
    template = COALESCE(n.template, EXCLUDED.template),
    category = COALESCE(n.category, EXCLUDED.category),
    campaign_id = COALESCE(n.campaign_id, EXCLUDED.campaign_id),
    trace_id = COALESCE(n.trace_id, EXCLUDED.trace_id)
WHERE EXCLUDED.status_rank > n.status_rank
"""

COPY_HISTORY = (
    "COPY status_history (notification_id, channel, status, reason, delivery_id, provider_message_id, at) FROM STDIN"
)

STATUS_OF = "SELECT status FROM notifications WHERE id = %s"
TRACE_OF = "SELECT trace_id FROM notifications WHERE id = %s"
HISTORY_OF = "SELECT status FROM status_history WHERE notification_id = %s ORDER BY id"
REACHED = "SELECT DISTINCT notification_id, status FROM status_history WHERE notification_id = ANY(%s) AND status = ANY(%s)"
# a delivery's 'sent' is written once (the partial unique index of migration 008): a replay or a re-read batch says
# 'sent' again so that no status is lost, and the history does not grow a second row for it
SENT_ONCE_COLUMNS = ("nids", "channels", "statuses", "reasons", "dids", "pmids")
INSERT_SENT_ONCE = f"""
INSERT INTO status_history (notification_id, channel, status, reason, delivery_id, provider_message_id, at)
SELECT h.nid, h.channel, h.status, h.reason, h.did, h.pmid, to_timestamp(h.at_ms / 1000.0)
FROM unnest({", ".join(packed(c) for c in SENT_ONCE_COLUMNS)}, {packed_ints("ats")})
    AS h(nid, channel, status, reason, did, pmid, at_ms)
ON CONFLICT (delivery_id) WHERE status = 'sent' AND delivery_id IS NOT NULL DO NOTHING
"""


def sent_once(change: StatusChange) -> bool:
    """A change the history keeps once per delivery."""
    return change.status == Status.SENT and change.delivery_id is not None


def history_row(change: StatusChange) -> tuple:
    return (change.notification_id, change.channel, change.status, change.reason, change.delivery_id,
            change.provider_message_id, as_datetime(change.at))


def upsert_params(updates: list[NotificationUpdate]) -> dict[str, str]:
    """The UPSERT's packed columns."""
    columns = zip(*((u.id, u.event_id, u.event_type, u.user_id, u.template, u.category, u.campaign_id, u.status,
                     u.reason, u.trace_id) for u in updates), strict=True)
    params: dict[str, str] = {}
    for name, values in zip(UPSERT_COLUMNS, columns, strict=True):
        params.update(pack(name, values))
    params["ranks"] = pack_ints(u.rank for u in updates)
    params["ats"] = pack_ints(u.at_ms for u in updates)
    return params


def sent_once_params(changes: list[StatusChange]) -> dict[str, str]:
    """INSERT_SENT_ONCE's packed columns."""
    columns = zip(*((c.notification_id, c.channel, c.status, c.reason, c.delivery_id, c.provider_message_id)
                    for c in changes), strict=True)
    params: dict[str, str] = {}
    for name, values in zip(SENT_ONCE_COLUMNS, columns, strict=True):
        params.update(pack(name, values))
    params["ats"] = pack_ints(epoch_ms(c.at) for c in changes)
    return params


class StatusStore(Protocol):
    async def write(self, folded: Fold) -> None:
        """Append the history and apply the updates whose rank beats the stored one, atomically."""
        ...

    async def status_of(self, notification_id: str) -> Status | None: ...

    async def history_of(self, notification_id: str) -> list[Status]: ...

    async def trace_of(self, notification_id: str) -> str | None: ...

    async def reached(self, notification_ids: Collection[str], statuses: Collection[Status]) -> dict[str, set[Status]]:
        """Which of ``statuses`` each notification's history holds (on any channel); absent: none of them."""
        ...


class PostgresStatusStore:
    def __init__(self, db: AsyncConnectionPool) -> None:
        self.db = db

    async def write(self, folded: Fold) -> None:
        if not folded.history:
            return
        once = [change for change in folded.history if sent_once(change)]
        rest = [history_row(change) for change in folded.history if not sent_once(change)]
        async with self.db.connection() as conn, conn.transaction(), conn.cursor() as cur:
            if rest:
                async with cur.copy(COPY_HISTORY) as copy:
                    for row in rest:
                        await copy.write_row(row)
            if once:
                await cur.execute(INSERT_SENT_ONCE, sent_once_params(once))
            if folded.updates:
                await cur.execute(UPSERT, upsert_params(folded.updates))

    async def status_of(self, notification_id: str) -> Status | None:
        async with self.db.connection() as conn:
            row = await (await conn.execute(STATUS_OF, (notification_id,))).fetchone()
        return Status(row[0]) if row else None

    async def history_of(self, notification_id: str) -> list[Status]:
        async with self.db.connection() as conn:
            rows = await (await conn.execute(HISTORY_OF, (notification_id,))).fetchall()
        return [Status(row[0]) for row in rows]

    async def trace_of(self, notification_id: str) -> str | None:
        async with self.db.connection() as conn:
            row = await (await conn.execute(TRACE_OF, (notification_id,))).fetchone()
        return row[0] if row else None

    async def reached(self, notification_ids: Collection[str], statuses: Collection[Status]) -> dict[str, set[Status]]:
        if not notification_ids or not statuses:
            return {}
        async with self.db.connection() as conn:
            rows = await (await conn.execute(REACHED, (list(notification_ids), [str(s) for s in statuses]))).fetchall()
        out: dict[str, set[Status]] = {}
        for notification_id, status in rows:
            out.setdefault(notification_id, set()).add(Status(status))
        return out


class MemoryStatusStore:
    """The in-memory twin: ``notifications`` by id and ``history`` in write order."""

    def __init__(self) -> None:
        self.notifications: dict[str, NotificationUpdate] = {}
        self.history: list[StatusChange] = []
        self.sent: dict[str, str | None] = {}   # delivery id → provider message id of its 'sent' in the history

    async def write(self, folded: Fold) -> None:
        for change in folded.history:
            if sent_once(change):
                assert change.delivery_id is not None
                if change.delivery_id in self.sent:
                    continue
                self.sent[change.delivery_id] = change.provider_message_id
            self.history.append(change)
        for update in folded.updates:
            stored = self.notifications.get(update.id)
            if stored is None:
                self.notifications[update.id] = update
            elif update.rank > stored.rank:  # the UPSERT's WHERE guard
                self.notifications[update.id] = replace(
                    update,
                    template=_coalesce(stored.template, update.template),
                    category=_coalesce(stored.category, update.category),
                    campaign_id=_coalesce(stored.campaign_id, update.campaign_id),
                    trace_id=_coalesce(stored.trace_id, update.trace_id),
                )

    async def status_of(self, notification_id: str) -> Status | None:
        stored = self.notifications.get(notification_id)
        return stored.status if stored else None

    async def history_of(self, notification_id: str) -> list[Status]:
        return [change.status for change in self.history if change.notification_id == notification_id]

    async def trace_of(self, notification_id: str) -> str | None:
        stored = self.notifications.get(notification_id)
        return stored.trace_id if stored else None

    async def reached(self, notification_ids: Collection[str], statuses: Collection[Status]) -> dict[str, set[Status]]:
        wanted = set(notification_ids)
        out: dict[str, set[Status]] = {}
        for change in self.history:
            if change.notification_id in wanted and change.status in statuses:
                out.setdefault(change.notification_id, set()).add(Status(change.status))
        return out


def _coalesce(first: str | None, second: str | None) -> str | None:
    return first if first is not None else second
