"""Recurring sends: a cron expression evaluated in each recipient's zone (``recurring_schedules``, ``recurring_targets``).

Each recipient of a schedule is a target row holding its next occurrence (``next_at``, UTC), computed in the
recipient's time zone (``scheduler.cron``). The scheduler claims the due targets of active schedules
(``FOR UPDATE SKIP LOCKED``: several replicas never take the same row), produces one ``NotificationRequested`` per
target to the events topic, and only after the broker acknowledged it moves ``next_at`` to the following
occurrence, in the same transaction. The event id names the schedule, the recipient and the occurrence, so a claim
published again after a crash before the commit is the same event, which the route stage's de-duplication drops:
each occurrence is delivered once. A scheduler that was down across several occurrences sends the oldest one missed,
once, and goes on from now. The zone is the user's current one (``users.time_zone``), read at every occurrence.
The events carry ``cancellation_key`` ``schedule:<id>``: ``herald notifications cancel --key schedule:<id>`` stops
what is already on its way.

The functions below the emitter are what ``herald schedules`` runs.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import KafkaError, KafkaException

from infra.kafka.producer import Producer
from infra.kafka.records import TRACE, OutRecord
from infra.settings import Settings
from scheduler.cron import check, next_occurrence, zone
from scheduler.metrics import SchedulerMetrics
from schemas.codec import Codec
from schemas.vocabulary import CHANNELS

log = logging.getLogger("herald.scheduler")

SCHEDULE_ID = re.compile(r"^[A-Za-z0-9._\-]{1,100}$")
KIND = "recurring"

CLAIM = """
SELECT t.schedule_id, t.user_id, t.next_at, COALESCE(u.time_zone, t.time_zone), s.cron, s.template, s.channels,
       s.category, s.variables_json, EXTRACT(EPOCH FROM now() - t.next_at)::float8
FROM recurring_targets t
JOIN recurring_schedules s ON s.id = t.schedule_id
LEFT JOIN users u ON u.id = t.user_id
WHERE t.next_at <= now() AND s.paused_at IS NULL
ORDER BY t.next_at
LIMIT %s
FOR UPDATE OF t SKIP LOCKED
"""
ADVANCE = """
UPDATE recurring_targets AS t SET next_at = a.next_at, last_at = a.last_at, time_zone = a.time_zone, sent = t.sent + 1
FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[], %s::text[])
     AS a(schedule_id, user_id, next_at, last_at, time_zone)
WHERE t.schedule_id = a.schedule_id AND t.user_id = a.user_id
"""


def occurrence_id(schedule_id: str, user_id: str, at: datetime) -> str:
    """The event (and notification) id of one occurrence for one recipient: the same on every publication."""
    return f"r:{schedule_id}:{user_id}:{at.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def safe_zone(tz: str | None) -> str:
    """The recipient's zone, UTC when it has none or it is not an IANA name (logged)."""
    if not tz:
        return "UTC"
    try:
        zone(tz)
    except ValueError:
        log.warning("time zone %r is not an IANA name; its recurring sends use UTC", tz)
        return "UTC"
    return tz


class Recurring:
    """Claims due targets, publishes their occurrences, moves them on. One transaction per claim."""

    def __init__(self, settings: Settings, metrics: SchedulerMetrics | None = None, batch_size: int = 1000,
                 delivery_timeout: float = 30.0, codec: Codec | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or SchedulerMetrics()
        self.batch_size = batch_size
        self.delivery_timeout = delivery_timeout
        self.codec = codec or Codec()
        self.topic = settings.topic("events")
        self._producer: Producer | None = None
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.settings.dsn, autocommit=False, connect_timeout=10)
        return self._conn

    def tick(self) -> int:
        """One claim: returns the occurrences published. Raises psycopg.OperationalError when PostgreSQL is gone."""
        conn = self._connection()
        try:
            with conn.transaction():
                rows = conn.execute(CLAIM, (self.batch_size,)).fetchall()
                if not rows:
                    return 0
                done = self._publish(rows)
                if done:
                    conn.execute(ADVANCE, tuple(map(list, zip(*done, strict=True))))
        except psycopg.OperationalError:
            self._conn = None
            raise
        for row in rows:
            self.metrics.lag.labels(KIND).observe(max(0.0, row[9]))
        self.metrics.published.labels(KIND).inc(len(done))
        return len(done)

    def _publish(self, rows: list[tuple]) -> list[tuple[str, str, datetime, datetime, str]]:
        """Produce each due occurrence; returns (schedule, user, next_at, occurrence, zone) of those acknowledged."""
        if self._producer is None:
            self._producer = Producer(self.settings, **{"message.timeout.ms": int(self.delivery_timeout * 1000)})
        reports: dict[int, KafkaError | None] = {}
        now = datetime.now(UTC)
        planned: dict[int, tuple[str, str, datetime, datetime, str]] = {}
        for i, (sid, uid, due, tz, cron, template, channels, category, variables, _lag) in enumerate(rows):
            tz = safe_zone(tz)
            eid = occurrence_id(sid, uid, due)
            record = {"event_id": eid, "occurred_at": now, "user_id": uid, "template": template,
                      "channels": [c for c in channels if c in CHANNELS], "category": category,
                      "variables_json": variables, "send_at": None, "ttl_seconds": None, "recipient": None,
                      "cancellation_key": f"schedule:{sid}"}
            try:
                value = self.codec.encode("NotificationRequested", record)
                nxt = next_occurrence(cron, tz, max(due, now))
            except ValueError as exc:   # stored by hand, not through `herald schedules create`: skip, say why
                log.warning("recurring schedule %s, user %s: %s; not sent", sid, uid, exc)
                continue

            def report(err: KafkaError | None, _msg: object, i: int = i) -> None:
                reports[i] = err

            try:
                self._producer.produce(OutRecord(self.topic, uid.encode(), value, [(TRACE, eid.encode())]), report)
            except KafkaException as exc:   # refused locally: stays due, tried again next tick
                log.warning("recurring schedule %s, user %s: Kafka refused the record (%s)", sid, uid, exc)
                continue
            planned[i] = (sid, uid, nxt, due, tz)
        left = self._producer.flush(self.delivery_timeout + 5)
        if left:
            log.warning("%d recurring occurrences not acknowledged within %.0fs; they stay due", left, self.delivery_timeout)
        failed = [err.str() for err in reports.values() if err is not None]
        if failed:
            log.warning("%d recurring occurrences refused by Kafka (they stay due): %s", len(failed), failed[0])
        return [planned[i] for i in sorted(reports) if reports[i] is None]

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
        if self._conn is not None and not self._conn.closed:
            self._conn.close()


# --- herald schedules -----------------------------------------------------------------------------


class ScheduleError(ValueError):
    """A schedule that cannot be created or changed as asked (the message says why)."""


@dataclass(frozen=True)
class ScheduleRow:
    id: str
    cron: str
    template: str
    channels: list[str]
    category: str
    paused: bool
    recipients: int
    next_at: datetime | None
    sent: int
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "cron": self.cron, "template": self.template, "channels": self.channels,
                "category": self.category, "status": "paused" if self.paused else "active",
                "recipients": self.recipients, "next_at": self.next_at.isoformat() if self.next_at else None,
                "sent": self.sent, "created_at": self.created_at.isoformat()}


def create(conn: psycopg.Connection, schedule_id: str, cron: str, template: str, channels: list[str], users: list[str],
           category: str = "transactional", variables: dict[str, Any] | None = None,
           now: datetime | None = None) -> dict[str, datetime]:
    """Store the schedule and each recipient's first occurrence in its zone; returns {user: next_at}."""
    if not SCHEDULE_ID.match(schedule_id):
        raise ScheduleError(f"schedule id {schedule_id!r}: 1 to 100 letters, digits, '.', '_' or '-'")
    try:
        check(cron)
    except ValueError as exc:
        raise ScheduleError(str(exc)) from None
    if not channels or (bad := [c for c in channels if c not in CHANNELS]):
        raise ScheduleError(f"channels must be among {', '.join(CHANNELS)}" + (f" (not {', '.join(bad)})" if channels else ""))
    if not users:
        raise ScheduleError("a schedule needs at least one recipient (--user)")
    have = {r[0] for r in conn.execute("SELECT DISTINCT channel FROM templates WHERE code = %s AND active", (template,))}
    if not have:
        raise ScheduleError(f"unknown template {template!r} (`herald templates list` shows them)")
    if missing := [c for c in channels if c not in have]:
        raise ScheduleError(f"template {template!r} has no active {', '.join(missing)} version")
    zones: dict[str, str | None] = {r[0]: r[1] for r in conn.execute("SELECT id, time_zone FROM users WHERE id = ANY(%s)",
                                                                         (users,))}
    if unknown := [u for u in dict.fromkeys(users) if u not in zones]:
        raise ScheduleError(f"{len(unknown)} unknown user(s): {', '.join(unknown[:5])} (create them first)")
    now = now or datetime.now(UTC)
    firsts: dict[str, tuple[datetime, str]] = {}
    for user in dict.fromkeys(users):
        tz = safe_zone(zones[user])
        try:
            firsts[user] = (next_occurrence(cron, tz, now), tz)
        except ValueError as exc:
            raise ScheduleError(str(exc)) from None
    with conn.transaction():
        inserted = conn.execute(
            "INSERT INTO recurring_schedules (id, cron, template, channels, category, variables_json) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING id",
            (schedule_id, cron, template, channels, category, json.dumps(variables or {}, separators=(",", ":")))).fetchone()
        if inserted is None:
            raise ScheduleError(f"a schedule {schedule_id!r} exists; delete it first or pick another id")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO recurring_targets (schedule_id, user_id, time_zone, next_at) VALUES (%s, %s, %s, %s)",
                            [(schedule_id, user, tz, at) for user, (at, tz) in firsts.items()])
    return {user: at for user, (at, _tz) in firsts.items()}


def list_schedules(conn: psycopg.Connection) -> list[ScheduleRow]:
    rows = conn.execute(
        "SELECT s.id, s.cron, s.template, s.channels, s.category, s.paused_at IS NOT NULL, count(t.user_id), "
        "min(t.next_at), COALESCE(sum(t.sent), 0), s.created_at FROM recurring_schedules s "
        "LEFT JOIN recurring_targets t ON t.schedule_id = s.id GROUP BY s.id ORDER BY s.id").fetchall()
    return [ScheduleRow(r[0], r[1], r[2], list(r[3]), r[4], r[5], int(r[6]), r[7], int(r[8]), r[9]) for r in rows]


def pause(conn: psycopg.Connection, schedule_id: str) -> None:
    if conn.execute("UPDATE recurring_schedules SET paused_at = COALESCE(paused_at, now()), updated_at = now() "
                    "WHERE id = %s RETURNING id", (schedule_id,)).fetchone() is None:
        raise ScheduleError(_unknown(schedule_id))


def resume(conn: psycopg.Connection, schedule_id: str, now: datetime | None = None) -> int:
    """Active again; every recipient's next occurrence is computed from now (what fell due while paused is skipped)."""
    now = now or datetime.now(UTC)
    with conn.transaction():
        row = conn.execute("UPDATE recurring_schedules SET paused_at = NULL, updated_at = now() WHERE id = %s "
                           "RETURNING cron", (schedule_id,)).fetchone()
        if row is None:
            raise ScheduleError(_unknown(schedule_id))
        targets = conn.execute("SELECT t.user_id, COALESCE(u.time_zone, t.time_zone) FROM recurring_targets t "
                               "LEFT JOIN users u ON u.id = t.user_id WHERE t.schedule_id = %s FOR UPDATE OF t",
                               (schedule_id,)).fetchall()
        with conn.cursor() as cur:
            cur.executemany("UPDATE recurring_targets SET next_at = %s, time_zone = %s WHERE schedule_id = %s AND user_id = %s",
                            [(next_occurrence(row[0], safe_zone(tz), now), safe_zone(tz), schedule_id, user)
                             for user, tz in targets])
    return len(targets)


def delete(conn: psycopg.Connection, schedule_id: str) -> None:
    if conn.execute("DELETE FROM recurring_schedules WHERE id = %s RETURNING id", (schedule_id,)).fetchone() is None:
        raise ScheduleError(_unknown(schedule_id))


def _unknown(schedule_id: str) -> str:
    return f"no schedule {schedule_id!r} (`herald schedules list` shows them)"
