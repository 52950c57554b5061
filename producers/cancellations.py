"""Cancel by cancellation key or by notification id: what the API's cancel routes and ``herald notifications cancel`` run.

A cancel is a row in ``cancellations`` (kind ``key`` or ``notification``); the route and deliver agents read it
(``streams.stores.cancellations``) and end what they hold 'canceled' instead of sending it: a record already in
Kafka, in a retry tier or on its way to the provider. Rows waiting in the scheduler's outbox (``send_at``, quiet
hours) are marked canceled here, so they are never published, and their notifications end 'canceled' at once.
The cancel returns once every worker has seen it (``HERALD_CAMPAIGN__CANCEL_CACHE_SECONDS`` plus a margin), and
then marks the outbox again: a route batch that worked from an older view may have scheduled a row meanwhile.
Nothing is sent after the return; a provider call already under way when the cancel was recorded may complete.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import psycopg

from infra.db import one_row
from infra.kafka.records import now_ms
from infra.schema_registry import catalog_for
from infra.settings import Settings
from producers.campaign_run import wait_for_workers
from schemas.codec import Codec, DecodeError
from schemas.records import Delivery, StatusChange
from schemas.vocabulary import RANK, Status
from streams.stages.status_fold import fold
from streams.stores.cancellations import REASON_BY_ID, REASON_BY_KEY, CancelKind
from streams.stores.statuses import UPSERT, history_row, upsert_params

log = logging.getLogger("herald.cancel")

RECORD = """
INSERT INTO cancellations (kind, key, canceled_at) VALUES (%s, %s, now())
ON CONFLICT (kind, key) DO UPDATE SET canceled_at = GREATEST(cancellations.canceled_at, EXCLUDED.canceled_at)
RETURNING canceled_at
"""
MARK_SCHEDULED = """
UPDATE scheduled SET canceled_at = now()
WHERE published_at IS NULL AND canceled_at IS NULL AND {column} = %s
RETURNING notification_id, key, value, kind, dedup_key
"""
PENDING = "SELECT count(*) FROM scheduled WHERE notification_id = %s AND published_at IS NULL AND canceled_at IS NULL"
INSERT_HISTORY = ("INSERT INTO status_history (notification_id, channel, status, reason, delivery_id, provider_message_id, at)"
                  " VALUES (%s, %s, %s, %s, %s, %s, %s)")
MAX_KEY_CHARS = 512


@dataclass(frozen=True)
class Canceled:
    kind: CancelKind
    key: str
    canceled_at: datetime
    scheduled: int   # outbox rows (send_at, quiet hours) marked canceled, never to be published


def key_problem(key: str) -> str | None:
    """Why ``key`` cannot be a cancellation key, or None."""
    if not key or not key.strip():
        return "the cancellation key is empty"
    if "\x00" in key or len(key) > MAX_KEY_CHARS:
        return f"the cancellation key holds a NUL byte or is over {MAX_KEY_CHARS} characters"
    return None


def pending(conn: psycopg.Connection, notification_id: str) -> int:
    """Outbox rows of this notification still waiting to be published."""
    return int(one_row(conn.execute(PENDING, (notification_id,)).fetchone())[0])


def cancel(settings: Settings, conn: psycopg.Connection, kind: CancelKind, key: str, codec: Codec | None = None,
           wait: bool = True) -> Canceled:
    """Record the cancel, end the waiting outbox rows, wait for the workers (``wait``), end any rows scheduled
    meanwhile. ``conn`` is in autocommit mode or between transactions."""
    if problem := key_problem(key):
        raise ValueError(problem)
    codec = codec or Codec(catalog_for(settings))
    with conn.transaction():
        at: datetime = one_row(conn.execute(RECORD, (kind, key)).fetchone())[0]
        ended = _end_scheduled(conn, kind, key, codec)
    if wait:
        wait_for_workers(settings, at)
        with conn.transaction():
            ended += _end_scheduled(conn, kind, key, codec)
    log.info("canceled %s %s: %d scheduled rows", kind, key, ended)
    return Canceled(kind, key, at, ended)


def _end_scheduled(conn: psycopg.Connection, kind: CancelKind, key: str, codec: Codec) -> int:
    column = "cancellation_key" if kind == CancelKind.KEY else "notification_id"
    rows = conn.execute(MARK_SCHEDULED.format(column=column), (key,)).fetchall()
    reason = REASON_BY_KEY if kind == CancelKind.KEY else REASON_BY_ID
    changes = [_change(codec, nid, row_key, value, reason) for nid, row_key, value, _kind, _dedup in rows if nid]
    if changes:
        folded = fold(changes)
        with conn.cursor() as cur:
            cur.executemany(INSERT_HISTORY, [history_row(c) for c in folded.history])
            cur.execute(UPSERT, upsert_params(folded.updates))
    return len(rows)


def _change(codec: Codec, notification_id: str, key: bytes | None, value: bytes, reason: str) -> StatusChange:
    """The 'canceled' change of one outbox row: a Delivery deferred by quiet hours names its channel and delivery."""
    user_id = bytes(key).decode("utf-8", "replace") if key is not None else ""
    try:
        decoded = codec.decode(bytes(value))
    except DecodeError:
        return StatusChange(notification_id, notification_id, user_id, Status.CANCELED, now_ms(), reason=reason)
    if decoded.name == "Delivery":
        d = Delivery.from_avro(decoded.record)
        return StatusChange(notification_id, d.event_id, d.user_id, Status.CANCELED, now_ms(), event_type=d.event_type,
                            channel=d.channel, reason=reason, delivery_id=d.delivery_id, template=d.template,
                            category=d.category)
    rec = decoded.record
    return StatusChange(notification_id, notification_id, str(rec.get("user_id") or user_id), Status.CANCELED, now_ms(),
                        event_type=decoded.name, reason=reason, template=rec.get("template"), category=rec.get("category"))


def is_sent(status: str) -> bool:
    """A status at or past 'sent': the notification reached a provider and cannot be recalled."""
    return RANK.get(Status(status), 0) >= RANK[Status.SENT]


# statuses a notification ends with without being sent: nothing is left to cancel
ENDED = frozenset({Status.SUPPRESSED, Status.SKIPPED, Status.RATE_LIMITED, Status.EXPIRED, Status.FAILED,
                   Status.DEAD_LETTERED})
