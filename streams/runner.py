"""Runs one handler over one batch so that nothing is lost.

faust-streaming acks a message whose agent raised (issues #315, #189), so the
runner never lets an exception escape:

* an infrastructure error (Kafka, PostgreSQL or Redis unreachable) retries the
  whole batch with backoff until it succeeds or the worker stops; the batch is
  not acked meanwhile, so a stop loses nothing (handlers are idempotent);
* any other error is a bug or a poison record: the batch is split and run one
  record at a time, and the record that still fails goes to the DLQ with its
  reason while the rest of the partition keeps flowing.
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

from streams.context import Context
from streams.dlq import DeadLetter, dead_letter
from streams.output import is_kafka_error
from streams.records import InRecord, OutRecord

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


class Handler(Protocol):
    name: str    # agent name, for metrics and logs
    stage: str   # DLQ stage of a record this handler cannot process

    async def handle(self, batch: list[InRecord]) -> list[OutRecord]:
        """Process a batch; return the records to produce before the batch is acked."""
        ...


def is_infra_error(exc: BaseException) -> bool:
    return isinstance(exc, INFRA_ERRORS) or is_kafka_error(exc)


async def until_reachable(attempt: Callable[[], Awaitable[None]], what: str, max_backoff: float = 5.0) -> None:
    """Await ``attempt()`` until it succeeds, waiting out infrastructure errors with backoff; others raise."""
    backoff = 0.1
    while True:
        try:
            await attempt()
            return
        except Exception as exc:  # noqa: BLE001
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

    async def run(self, batch: list[InRecord]) -> None:
        """Process and produce the batch's outputs. Returns only when done; raises only CancelledError."""
        m = self.ctx.metrics
        name = self.handler.name
        for topic, n in Counter(rec.topic for rec in batch).items():
            m.events_in.labels(topic).inc(n)
        t0 = time.perf_counter()
        await self._until_done(lambda: self._whole(batch))
        m.batch_seconds.labels(name).observe(time.perf_counter() - t0)
        m.last_commit.labels(name).set(time.time())

    async def _whole(self, batch: list[InRecord]) -> None:
        try:
            out = await self.handler.handle(batch)
        except Exception as exc:  # noqa: BLE001
            if is_infra_error(exc):
                raise
            log.warning("%s: batch of %d failed (%r); isolating records", self.handler.name, len(batch), exc)
            out = []
            for rec in batch:
                out += await self._one(rec)
        await self.ctx.output.send_all(out)

    async def _one(self, rec: InRecord) -> list[OutRecord]:
        try:
            return await self.handler.handle([rec])
        except Exception as exc:  # noqa: BLE001
            if is_infra_error(exc):
                raise
            log.exception("%s: record %s/%d/%d dead-lettered", self.handler.name, rec.topic, rec.partition, rec.offset,
                          extra={"trace_id": rec.trace_id})
            why = DeadLetter(self.handler.stage, type(exc).__name__, str(exc) or repr(exc))
            self.ctx.metrics.dead_letters.labels(why.stage, why.error_class).inc()
            return [dead_letter(rec, why, self.ctx.settings.topic("dlq"))]

    async def _until_done(self, attempt) -> None:
        backoff = 0.1
        while True:
            try:
                await attempt()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                if not is_infra_error(exc):
                    log.exception("%s: unexpected error outside record isolation", self.handler.name)
                else:
                    log.warning("%s: infrastructure error %r; retrying the batch in %.1fs", self.handler.name, exc, backoff)
                self.ctx.metrics.batch_retries.labels(self.handler.name, type(exc).__name__).inc()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
