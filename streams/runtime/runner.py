"""Runs one handler over one batch so that nothing is lost and no record stops the rest.

faust-streaming acks a message whose agent raised (issues #315, #189), so the
runner never lets an exception escape:

* an infrastructure error (Kafka, PostgreSQL or Redis unreachable) retries the
  whole batch with backoff, ``settings.batch_infra_retries`` times; then the
  records are retried one by one, each until it succeeds. A record that keeps
  failing while the others get through and every service answers is what
  fails, not the infrastructure: once it has failed more than the retries
  *with every service answering at that moment* (failures during an outage
  never count), it is dead-lettered (``persistent_error``)
  and the rest go on. Nothing is acked meanwhile, so a stop loses nothing
  (handlers are idempotent; rate limits remember each (event, channel)'s
  decision, so a retried batch never counts twice);
* any other error is a bug or a poison record: the batch is split and run one
  record at a time, and the record that still fails goes to the DLQ with its
  reason while the rest of the partition keeps flowing. An output over the
  record size limit is such an error (``too_large``): bad input, not an outage.

Log lines carry the trace id of the record in hand (``infra.logs.trace_id_var``): while a batch of one record
is handled (an interactive agent's usual batch, and every record the runner isolates), every line, the
handler's included, carries that record's trace id. A batch of several records has no one trace id: its
batch-level lines carry none, and each per-record event (a dead letter, a record's failure) is logged with
its own.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Protocol

import psycopg
import psycopg_pool
import redis.exceptions

from infra.kafka.dead_letters import DeadLetter, dead_letter
from infra.kafka.producer import RecordTooLarge, is_kafka_error
from infra.kafka.records import InRecord, OutRecord
from infra.logs import traced
from streams.runtime.context import Context

log = logging.getLogger("herald.runner")

INFRA_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    ConnectionError,
    TimeoutError,
)
# OperationalError subclasses that a record causes (an index row over PostgreSQL's limit), not an outage
DATA_ERRORS: tuple[type[BaseException], ...] = (psycopg.errors.ProgramLimitExceeded,)


class Handler(Protocol):
    name: str    # agent name, for metrics and logs
    stage: str   # DLQ stage of a record this handler cannot process

    async def handle(self, batch: list[InRecord]) -> list[OutRecord]:
        """Process a batch; return the records to produce before the batch is acked."""
        ...


def batch_trace(batch: list[InRecord]) -> str | None:
    """The trace id the lines about ``batch`` carry: its record's when it holds one, else none."""
    return batch[0].trace_id if len(batch) == 1 else None


def is_infra_error(exc: BaseException) -> bool:
    if isinstance(exc, DATA_ERRORS):
        return False
    return isinstance(exc, INFRA_ERRORS) or is_kafka_error(exc)


async def until_reachable(attempt: Callable[[], Awaitable[None]], what: str, max_backoff: float = 5.0) -> None:
    """Await ``attempt()`` until it succeeds, waiting out infrastructure errors with backoff; others raise."""
    backoff = 0.1
    while True:
        try:
            await attempt()
            return
        except Exception as exc:
            if not is_infra_error(exc):
                raise
            log.warning("%s: infrastructure error %r; retrying in %.1fs", what, exc, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, max_backoff)


class BatchRunner:
    def __init__(self, handler: Handler, ctx: Context, max_backoff: float = 5.0) -> None:
        self.handler = handler
        self.ctx = ctx
        self.max_backoff = max_backoff
        self.infra_retries = ctx.settings.batch_infra_retries

    async def run(self, batch: list[InRecord]) -> None:
        """Process and produce the batch's outputs. Returns only when done; raises only CancelledError."""
        m = self.ctx.metrics
        name = self.handler.name
        for topic, n in Counter(rec.topic for rec in batch).items():
            m.events_in.labels(topic).inc(n)
        t0 = time.perf_counter()
        with traced(batch_trace(batch)):
            if not await self._whole_with_retries(batch):
                await self._record_by_record(batch)
        m.batch_seconds.labels(name).observe(time.perf_counter() - t0)
        m.last_commit.labels(name).set(time.time())

    async def _whole_with_retries(self, batch: list[InRecord]) -> bool:
        """The whole batch, retried on infrastructure errors; False once the retries are spent."""
        backoff = min(0.1, self.max_backoff)
        for attempt in range(self.infra_retries + 1):
            try:
                await self._whole(batch)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                self._note_retry(exc, backoff, f"the batch of {len(batch)}")
                if attempt == self.infra_retries and len(batch) > 1:
                    break
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
        log.warning("%s: a batch of %d failed %d times; retrying its records one by one",
                    self.handler.name, len(batch), self.infra_retries + 1)
        return False

    async def _record_by_record(self, batch: list[InRecord]) -> None:
        """Each record until it succeeds; one that keeps failing while the rest and every service answer is dead."""
        failures: dict[int, int] = {}
        strikes: dict[int, int] = {}   # failures seen while every service answered: an outage's never count
        pending = list(batch)
        got_through = False
        backoff = min(0.1, self.max_backoff)
        while pending:
            left: list[InRecord] = []
            for rec in pending:
                with traced(rec.trace_id):
                    try:
                        await self._whole([rec])
                        got_through = True
                        continue
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # noqa: BLE001
                        n = failures[id(rec)] = failures.get(id(rec), 0) + 1
                        self._note_retry(exc, backoff, f"record {rec.topic}/{rec.partition}/{rec.offset}")
                        # the services are probed only once the cheap conditions hold: never per record in an outage
                        if (got_through or len(batch) == 1) and n > self.infra_retries and await self._services_answer():
                            k = strikes[id(rec)] = strikes.get(id(rec), 0) + 1
                            if k > self.infra_retries:
                                why = DeadLetter(self.handler.stage, "persistent_error",
                                                 f"failed {k} times while every service answered: {type(exc).__name__}: {exc}")
                                if await self._try_send([self._dead(rec, why)]):
                                    log.error("%s: record %s/%d/%d dead-lettered: persistent_error", self.handler.name,
                                              rec.topic, rec.partition, rec.offset)
                                    continue
                        left.append(rec)
            pending = left
            if pending:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    async def _whole(self, batch: list[InRecord]) -> None:
        with traced(batch_trace(batch)):
            try:
                out = await self.handler.handle(batch)
                self.ctx.output.check_sizes(out)
                await self.ctx.output.send_all(out)
                return
            except Exception as exc:
                if is_infra_error(exc) or len(batch) == 1:
                    if not is_infra_error(exc):
                        await self._send_dead(batch[0], exc)
                        return
                    raise
                log.warning("%s: batch of %d failed (%r); isolating records", self.handler.name, len(batch), exc)
        for rec in batch:   # each in its own trace
            await self._whole([rec])

    async def _send_dead(self, rec: InRecord, exc: Exception) -> None:
        if isinstance(exc, RecordTooLarge):
            log.error("%s: record %s/%d/%d dead-lettered: too_large (%s)", self.handler.name, rec.topic, rec.partition,
                      rec.offset, exc, extra={"trace_id": rec.trace_id})
            why = DeadLetter(self.handler.stage, "too_large", str(exc))
        else:
            log.error("%s: record %s/%d/%d dead-lettered: %r", self.handler.name, rec.topic, rec.partition, rec.offset,
                      exc, exc_info=exc, extra={"trace_id": rec.trace_id})
            why = DeadLetter(self.handler.stage, type(exc).__name__, str(exc) or repr(exc))
        await self.ctx.output.send_all([self._dead(rec, why)])

    def _dead(self, rec: InRecord, why: DeadLetter) -> OutRecord:
        self.ctx.metrics.dead_letters.labels(why.stage, why.error_class).inc()
        s = self.ctx.settings
        return dead_letter(rec, why, s.topic("dlq"), s.max_record_bytes)

    async def _try_send(self, records: list[OutRecord]) -> bool:
        try:
            await self.ctx.output.send_all(records)
            return True
        except Exception as exc:  # noqa: BLE001
            log.warning("%s: dead letter not sent (%r); the record stays in hand", self.handler.name, exc)
            return False

    async def _services_answer(self) -> bool:
        """Redis, PostgreSQL, Kafka and the schema registry (when configured) each answer a trivial request within a few seconds."""
        try:
            await asyncio.wait_for(self.ctx.redis.ping(), 3)
            async with self.ctx.db.connection(timeout=3) as conn:
                await conn.execute("SELECT 1")
            if not await asyncio.to_thread(self.ctx.output.reachable, 3.0):
                return False
            registry = getattr(self.ctx.codec, "registry", None)
            return registry is None or await asyncio.to_thread(registry.reachable)
        except Exception:  # noqa: BLE001
            return False

    def _note_retry(self, exc: BaseException, backoff: float, what: str) -> None:
        if is_infra_error(exc):
            log.warning("%s: infrastructure error %r on %s; retrying in %.1fs", self.handler.name, exc, what, backoff)
        else:
            log.exception("%s: unexpected error outside record isolation on %s", self.handler.name, what, exc_info=exc)
        self.ctx.metrics.batch_retries.labels(self.handler.name, type(exc).__name__).inc()
