"""The outbox publisher: claim due ``scheduled`` rows, publish them, mark them published after Kafka's delivery report.

One claim is one transaction: ``SELECT … FOR UPDATE SKIP LOCKED`` takes up to
``batch_size`` rows due by the database clock (a canceled row never), the records are produced and
flushed, and only the rows whose delivery report came back clean get
``published_at`` before the commit. Row locks keep other replicas off these
rows meanwhile; a crash before the commit releases them and they are published
again (at least once; downstream de-duplicates by event id and the delivery
ledger). A row Kafka refuses for a reason of its own (too large, bad topic)
backs off with ``attempts``/``last_error`` and is logged on a line of its own,
with its record's trace id; a broker outage leaves rows as they were.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field

import psycopg
from confluent_kafka import KafkaError, KafkaException

from infra.kafka.producer import Producer
from infra.settings import Settings
from scheduler.metrics import SchedulerMetrics
from scheduler.rows import BadRow, DueRow, retry_delay, row_trace, to_record

log = logging.getLogger("herald.scheduler")

CLAIM = """
SELECT id, topic, key, value, headers, kind, attempts, EXTRACT(EPOCH FROM now() - due_at)::float8 AS lag
FROM scheduled
WHERE published_at IS NULL AND canceled_at IS NULL AND due_at <= now()
ORDER BY due_at, id
LIMIT %s
FOR UPDATE SKIP LOCKED
"""
MARK_PUBLISHED = "UPDATE scheduled SET published_at = now(), last_error = NULL WHERE id = ANY(%s)"
MARK_REFUSED = """
UPDATE scheduled AS s SET attempts = s.attempts + 1, last_error = r.error,
       due_at = now() + make_interval(secs => r.delay)
FROM unnest(%s::bigint[], %s::text[], %s::float8[]) AS r(id, error, delay)
WHERE s.id = r.id
"""

# a broker that is down or slow: leave the rows alone, they go out when it is back
_TRANSIENT = {
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._QUEUE_FULL,
}


@dataclass
class ClaimResult:
    claimed: int = 0
    published: int = 0
    refused: int = 0
    transient: int = 0
    errors: list[str] = field(default_factory=list)


def is_transient(err: KafkaError) -> bool:
    return err.code() in _TRANSIENT or err.retriable()


def _log_refused(row_id: int, refusal: tuple[int, str, float], headers: object) -> None:
    """A refused row's own line, with its record's trace id (a batch's summary line carries none)."""
    log.warning("scheduled row %d refused (%s); tried again in %.0fs", row_id, refusal[1], refusal[2],
                extra={"trace_id": row_trace(headers)})


class Outbox:
    def __init__(
        self,
        dsn: str,
        kafka: Settings,
        *,
        batch_size: int = 1000,
        delivery_timeout: float = 30.0,
        metrics: SchedulerMetrics | None = None,
        **producer_extra: object,
    ) -> None:
        self.dsn = dsn
        self.batch_size = batch_size
        self.delivery_timeout = delivery_timeout
        self.metrics = metrics or SchedulerMetrics()
        self._producer = Producer(kafka, **{"message.timeout.ms": int(delivery_timeout * 1000), **producer_extra})
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=False, connect_timeout=10)
        return self._conn

    def claim_and_publish(self) -> ClaimResult:
        """One batch: claim due rows, publish, mark. Raises psycopg.OperationalError when PostgreSQL is gone."""
        conn = self._connection()
        result = ClaimResult()
        try:
            with conn.transaction():
                rows = conn.execute(CLAIM, (self.batch_size,)).fetchall()
                result.claimed = len(rows)
                if not rows:
                    return result
                published, refused = self._publish(rows, result)
                if published:
                    conn.execute(MARK_PUBLISHED, (published,))
                if refused:
                    ids, errors, delays = zip(*refused, strict=True)
                    conn.execute(MARK_REFUSED, (list(ids), list(errors), list(delays)))
        except psycopg.OperationalError:
            self._drop_connection()
            raise
        for _id, _topic, _key, _value, _headers, kind, _attempts, lag in rows:
            self.metrics.lag.labels(kind).observe(max(0.0, lag))
        return result

    def _publish(self, rows: list[tuple], result: ClaimResult) -> tuple[list[int], list[tuple[int, str, float]]]:
        reports: dict[int, KafkaError | None] = {}
        refused: list[tuple[int, str, float]] = []
        kinds: dict[int, str] = {}

        def reporter(row_id: int):
            def report(err: KafkaError | None, _msg: object) -> None:
                reports[row_id] = err

            return report

        with self._lock:
            for row_id, topic, key, value, headers, kind, attempts, _lag in rows:
                kinds[row_id] = kind
                try:
                    rec = to_record(DueRow(row_id, topic, key, value, headers))
                    self._produce(rec.topic, rec.value, rec.key, rec.headers, reporter(row_id))
                except (BadRow, KafkaException, ValueError, TypeError) as exc:
                    refused.append((row_id, f"{type(exc).__name__}: {exc}", retry_delay(attempts + 1)))
                    self.metrics.refused.labels(type(exc).__name__).inc()
                    _log_refused(row_id, refused[-1], headers)
            left = self._producer.flush(self.delivery_timeout + 5)
        if left:
            log.warning("%d scheduled records not acknowledged within %.0fs; they stay due", left, self.delivery_timeout)
        attempts_of = {r[0]: r[6] for r in rows}
        headers_of = {r[0]: r[4] for r in rows}
        published = []
        for row_id, err in reports.items():
            if err is None:
                published.append(row_id)
                self.metrics.published.labels(kinds[row_id]).inc()
            elif is_transient(err):
                result.errors.append(err.str())
            else:
                refused.append((row_id, err.str(), retry_delay(attempts_of[row_id] + 1)))
                self.metrics.refused.labels(err.name()).inc()
                _log_refused(row_id, refused[-1], headers_of[row_id])
        result.published = len(published)
        result.refused = len(refused)
        result.transient = len(rows) - len(published) - len(refused)  # timed out or broker down: stay due
        result.errors += [e for _, e, _ in refused]
        return published, refused

    def _produce(self, topic: str, value: bytes, key: bytes | None, headers, on_delivery) -> None:
        self._producer.produce_value(topic, value, key, headers, on_delivery)

    def drain(self, max_batches: int = 100) -> ClaimResult:
        """Claim batches until fewer than ``batch_size`` rows are due (or ``max_batches``)."""
        total = ClaimResult()
        for _ in range(max_batches):
            r = self.claim_and_publish()
            total.claimed += r.claimed
            total.published += r.published
            total.refused += r.refused
            total.transient += r.transient
            total.errors += r.errors[:5]
            if r.claimed < self.batch_size or r.transient:
                break
        return total

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # already broken
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._producer.flush(10)
        self._drop_connection()
