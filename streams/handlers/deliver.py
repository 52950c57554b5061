"""The deliver agents: one per channel and lane, each calling its channel's provider sink.

Per batch: decode → claim in the ledger (one statement) → per provider chunk:
circuit check, sink call, mark the chunk in the ledger (one statement) → status
changes, retries, dead letters, device updates.

The crash window. A delivery is claimed before the call and marked ``sent``
right after its chunk returns. A crash (SIGKILL, power loss) *between the
provider accepting a chunk and that mark* leaves those rows ``claimed``: on
restart they are re-read (the offset was not committed). A claim younger than
``claim_lease`` might be a live call by another worker (a rebalance), so it is
handed back to the first retry tier without being sent; once older it is sent
again. So in that window, and only there, a message may reach the provider
twice (at-least-once, bounded to one chunk per crash); everywhere else, replays
and re-deliveries are acknowledged from the ledger without a provider call, and
their 'sent' status is said again (a batch retried after Kafka, Redis or
PostgreSQL went away must not lose it). An outage is not a crash: after a call
the mark waits for PostgreSQL, and the circuit skips an observation without Redis.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


from infra.settings import CHANNELS, DeliverTuning, Settings
from infra.topics import deliver_topic
from schemas.codec import DecodeError
from sinks.base import Result, Sink
from sinks.errors import DeliveryError, RateLimited, Retryable
from sinks.factory import build_sink
from streams.runtime.registry import AgentSpec
from streams.stores.circuit import CircuitStore
from streams.runtime.context import Context
from streams.stores.devices import apply_device_effects
from infra.kafka.dead_letters import DeadLetter, dead_letter
from infra.kafka.records import ATTEMPT, InRecord, OutRecord, now_ms, set_header
from streams.runtime.runner import is_infra_error, until_reachable
from streams.stages.deliver import (
    DeadLetterIt, DeliverConfig, HandBack, MarkSent, ScheduleRetry, WaitAndResend, admit, device_effects,
    failure, first_occurrences, ledger_decision, observation, observe, outcome, pause,
)
from streams.stages.retry import DUE_HEADER, ORIGIN_HEADER, Ladder
from streams.stages.status_change import status_record

log = logging.getLogger("herald.deliver")


class LaneGate:
    """In-process priority: a bulk agent waits while an interactive agent of its channel holds a batch."""

    def __init__(self) -> None:
        self._busy: dict[str, int] = {}
        self._idle: dict[str, asyncio.Event] = {}

    def _event(self, channel: str) -> asyncio.Event:
        if channel not in self._idle:
            self._idle[channel] = asyncio.Event()
            self._idle[channel].set()
        return self._idle[channel]

    @asynccontextmanager
    async def interactive(self, channel: str) -> AsyncIterator[None]:
        self._busy[channel] = self._busy.get(channel, 0) + 1
        self._event(channel).clear()
        try:
            yield
        finally:
            self._busy[channel] -= 1
            if not self._busy[channel]:
                self._event(channel).set()

    async def wait_idle(self, channel: str, max_wait: float = 30.0) -> None:
        event = self._event(channel)
        if not event.is_set():
            try:
                await asyncio.wait_for(event.wait(), max_wait)
            except TimeoutError:
                pass  # never starve the bulk lane completely
        await asyncio.sleep(0)


CLAIM = """
WITH input AS (
    SELECT * FROM unnest(%(ids)s::text[], %(nids)s::text[], %(chs)s::text[], %(addrs)s::text[])
        AS t(delivery_id, notification_id, channel, address)
), prev AS (
    SELECT d.delivery_id, d.status, d.provider_message_id FROM deliveries d JOIN input USING (delivery_id)
), claimed AS (
    INSERT INTO deliveries AS d (delivery_id, notification_id, channel, address, status, attempts, claimed_at, updated_at)
    SELECT delivery_id, notification_id, channel, address, 'claimed', 1, now(), now() FROM input
    ON CONFLICT (delivery_id) DO UPDATE SET status = 'claimed', attempts = d.attempts + 1, claimed_at = now(),
        updated_at = now(), error = NULL
    WHERE d.status = 'failed' OR (d.status = 'claimed' AND d.claimed_at <= now() - make_interval(secs => %(lease)s))
    RETURNING d.delivery_id
)
SELECT i.delivery_id, c.delivery_id IS NOT NULL, p.status, p.provider_message_id
FROM input i LEFT JOIN claimed c USING (delivery_id) LEFT JOIN prev p USING (delivery_id)
"""

MARK = """
UPDATE deliveries d SET status = u.status, provider_message_id = COALESCE(u.pmid, d.provider_message_id),
    error = u.error, sent_at = CASE WHEN u.status = 'sent' THEN now() ELSE d.sent_at END, updated_at = now()
FROM unnest(%(ids)s::text[], %(statuses)s::text[], %(pmids)s::text[], %(errors)s::text[])
    AS u(delivery_id, status, pmid, error)
WHERE d.delivery_id = u.delivery_id
"""

Item = tuple[InRecord, dict[str, Any]]


class DeliverHandler:
    stage = "deliver"

    def __init__(self, ctx: Context, channel: str, lane: str, sink: Sink, gate: LaneGate, tuning: DeliverTuning) -> None:
        self.ctx, self.channel, self.lane, self.sink, self.gate = ctx, channel, lane, sink, gate
        self.name = f"deliver-{channel}" + ("-bulk" if lane == "bulk" else "")
        self.cfg = DeliverConfig(tuning.breaker_failures, tuning.breaker_open_seconds, tuning.breaker_close_after,
                                 tuning.max_rate_wait, tuning.rate_wait_budget, tuning.claim_lease, tuning.device_failure_limit)
        self.chunk = max(1, min(sink.max_batch, tuning.max_chunk))
        self.ladder = Ladder.from_settings(ctx.settings)
        self.circuit = CircuitStore(ctx.redis, ctx.settings, sink.provider, ctx.metrics)
        self.status_topic = ctx.settings.topic("status")
        self.dlq_topic = ctx.settings.topic("dlq")
        self._counters: dict[str, Any] = {}

    async def handle(self, batch: list[InRecord]) -> list[OutRecord]:
        if self.lane == "interactive":
            async with self.gate.interactive(self.channel):
                return await self._handle(batch)
        return await self._handle(batch)

    async def _handle(self, batch: list[InRecord]) -> list[OutRecord]:
        out: list[OutRecord] = []
        items: list[Item] = []
        for rec in batch:
            try:
                decoded = self.ctx.codec.decode(rec.value)
                if decoded.name != "Delivery":
                    raise DecodeError("wrong_type", f"expected Delivery, got {decoded.name}")
                items.append((rec, decoded.record))
            except DecodeError as exc:
                out.append(self._dead(rec, DeadLetter("decode", exc.reason, str(exc))))
        now = now_ms()
        live: list[Item] = []
        for (rec, d), first in zip(items, first_occurrences([d["delivery_id"] for _, d in items]), strict=True):
            if not first:
                self._count("duplicate")
            elif d.get("expires_at") is not None and _ms(d["expires_at"]) < now:
                out.append(self._status(rec, d, "expired", reason="expired before delivery"))
                self._count("expired")
            else:
                live.append((rec, d))
        to_send: list[Item] = []
        for item, (decision, pmid) in zip(live, await self._claim(live), strict=True):
            if decision == "send":
                to_send.append(item)
            elif decision == "already_sent":
                # said again: this batch may be a retry whose first run sent it and then lost its outputs
                # (Kafka, Redis or PostgreSQL went away); a 'sent' never moves a later status backwards
                out.append(self._status(item[0], item[1], "sent", provider_message_id=pmid))
                self._count("already_sent")
            else:  # claimed by a call that may still be running elsewhere: look again later
                out.append(self._retry_record(item[0], item[1], self.ladder.topics[0],
                                              now + int(self.cfg.claim_lease * 1000), spent=False))
                self._count("in_flight")
        effects: list[tuple[str, Result]] = []
        await self._send(to_send, out, effects)
        if self.channel == "push" and effects:
            async with self.ctx.db.connection() as conn:
                await apply_device_effects(conn, device_effects([t for t, _ in effects], [r for _, r in effects]),
                                           self.cfg.device_failure_limit)
        return out

    async def _send(self, queue: list[Item], out: list[OutRecord], effects: list[tuple[str, Result]]) -> None:
        waited = 0.0
        for _ in range(100_000):  # bounded: every pass consumes the queue or waits within the budget
            if not queue:
                return
            chunk, queue = queue[: self.chunk], queue[self.chunk:]
            if self.lane == "bulk":
                await self.gate.wait_idle(self.channel)
            b = await self.circuit.load()
            now = now_ms()
            if b.paused_until_ms > now:
                wait = (b.paused_until_ms - now) / 1000
                if wait <= self.cfg.max_rate_wait and waited + wait <= self.cfg.rate_wait_budget:
                    await asyncio.sleep(wait)
                    waited += wait
                    now = now_ms()
                else:
                    await self._hand_back(chunk + queue, out, b.paused_until_ms, "rate limited")
                    return
            admitted, allowance = admit(b, now, self.cfg)
            if admitted != b:
                b = await self.circuit.update(lambda cur: admit(cur, now, self.cfg)[0])
            if allowance == 0:
                await self._fail_all(chunk + queue, Retryable("circuit open: provider not called"), out)
                return
            if allowance is not None and allowance < len(chunk):
                chunk, queue = chunk[:allowance], chunk[allowance:] + queue
            results = await self._call(chunk)
            now = now_ms()
            seen = [observation(r) for r in results]
            limits = [r.retry_after for r in results if isinstance(r, RateLimited)]

            def change(cur, seen=seen, limits=limits, now=now):
                cur = observe(cur, seen, now, self.cfg)
                return pause(cur, max(limits), now) if limits else cur

            await self._observe(change)
            resend: list[Item] = []
            marks: list[tuple[str, str, str | None, str | None]] = []
            for (rec, d), r in zip(chunk, results, strict=True):
                action = outcome(d, r, self.ladder, now, self.cfg, waited)
                if isinstance(action, WaitAndResend):
                    resend.append((rec, d))
                    continue
                marks.append(self._apply(rec, d, action, out, now))
                if self.channel == "push":
                    effects.append((d["address"], r))
            await self._mark_after_call(marks)
            if resend:
                wait = max(r.retry_after for r in results if isinstance(r, RateLimited))
                await asyncio.sleep(wait)
                waited += wait
                queue = resend + queue

    def _apply(self, rec: InRecord, d: dict[str, Any], action: Any, out: list[OutRecord], now: int):
        did = d["delivery_id"]
        if isinstance(action, MarkSent):
            self._count("sent")
            self.ctx.metrics.e2e_latency.labels(self.channel, self.lane).observe(max(0.0, (now - _ms(d["occurred_at"])) / 1000))
            out.append(self._status(rec, d, "sent", provider_message_id=action.provider_message_id))
            return (did, "sent", action.provider_message_id, None)
        if isinstance(action, ScheduleRetry):
            self._count("retry")
            self.ctx.metrics.retries.labels(str(action.tier)).inc()
            out.append(self._retry_record(rec, action.delivery, action.topic, action.due_ms, spent=True))
            return (did, "failed", None, action.delivery["last_error"])
        if isinstance(action, DeadLetterIt):
            self._count(action.error_class)
            self.ctx.metrics.dead_letters.labels("deliver", action.error_class).inc()
            out.append(self._dead(rec, DeadLetter("deliver", action.error_class, action.reason, action.attempts,
                                                  action.first_failure_ms)))
            out.append(self._status(rec, d, "failed", reason=f"{action.error_class}: {action.reason}"[:500]))
            return (did, "failed", None, action.reason[:1000])
        assert isinstance(action, HandBack)
        self._count("handed_back")
        out.append(self._retry_record(rec, d, action.topic, action.due_ms, spent=False))
        return (did, "failed", None, action.reason)

    async def _call(self, chunk: list[Item]) -> list[Result]:
        t0 = time.perf_counter()
        try:
            results = await self.sink.send_batch([d for _, d in chunk])
            if len(results) != len(chunk):
                raise RuntimeError(f"sink returned {len(results)} results for {len(chunk)} deliveries")
        except Exception as exc:  # noqa: BLE001 - a sink bug must not lose the chunk
            log.exception("%s: sink %s failed", self.name, self.sink.provider)
            results = [Retryable(f"sink error: {exc!r}") for _ in chunk]
        self.ctx.metrics.provider_latency.labels(self.sink.provider).observe(time.perf_counter() - t0)
        return results

    async def _fail_all(self, items: list[Item], err: DeliveryError, out: list[OutRecord]) -> None:
        now = now_ms()
        marks = [self._apply(rec, d, failure(d, err, self.ladder, now), out, now) for rec, d in items]
        await self._mark(marks)

    async def _hand_back(self, items: list[Item], out: list[OutRecord], due_ms: int, reason: str) -> None:
        now = now_ms()
        marks = [self._apply(rec, d, HandBack(self.ladder.topics[0], due_ms, reason), out, now) for rec, d in items]
        await self._mark(marks)

    # --- ledger ---------------------------------------------------------------
    async def _claim(self, items: list[Item]) -> list[tuple[str, str | None]]:
        """Per item: the ledger's decision and, for one already sent, its provider message id."""
        if not items:
            return []
        ds = [d for _, d in items]
        params = {"ids": [d["delivery_id"] for d in ds], "nids": [d["notification_id"] for d in ds],
                  "chs": [self.channel] * len(ds), "addrs": [d["address"] for d in ds], "lease": self.cfg.claim_lease}
        async with self.ctx.db.connection() as conn:
            rows = await (await conn.execute(CLAIM, params)).fetchall()
        by_id = {r[0]: (ledger_decision(r[1], r[2]), r[3]) for r in rows}
        return [by_id[d["delivery_id"]] for d in ds]

    async def _observe(self, change) -> None:
        """Feed the call's outcome to the shared circuit; without Redis the breaker misses one observation."""
        try:
            await self.circuit.update(change)
        except Exception as exc:  # noqa: BLE001
            if not is_infra_error(exc):
                raise
            log.warning("%s: circuit state not updated (%r)", self.name, exc)

    async def _mark_after_call(self, marks: list[tuple[str, str, str | None, str | None]]) -> None:
        """The provider has answered: what it said must reach the ledger, or a retry of the batch would take
        these rows for calls still in flight and send them again after the lease. Waits out a PostgreSQL outage."""
        await until_reachable(lambda: self._mark(marks), f"{self.name}: ledger after a provider call")

    async def _mark(self, marks: list[tuple[str, str, str | None, str | None]]) -> None:
        if not marks:
            return
        ids, statuses, pmids, errors = (list(x) for x in zip(*marks, strict=True))
        async with self.ctx.db.connection() as conn:
            await conn.execute(MARK, {"ids": ids, "statuses": statuses, "pmids": pmids, "errors": errors})

    # --- records ----------------------------------------------------------------
    def _status(self, rec: InRecord, d: dict[str, Any], status: str, **kw: Any) -> OutRecord:
        return status_record(
            self.ctx.codec, self.status_topic, notification_id=d["notification_id"], event_id=d["event_id"],
            user_id=d["user_id"], status=status, event_type=d["event_type"], channel=self.channel,
            delivery_id=d["delivery_id"], template=d["template"], category=d["category"],
            campaign_id=d.get("campaign_id"), trace_id=rec.trace_id, **kw,
        )

    def _retry_record(self, rec: InRecord, d: dict[str, Any], topic: str, due_ms: int, spent: bool) -> OutRecord:
        headers = set_header(rec.headers, DUE_HEADER, str(due_ms))
        headers = set_header(headers, ORIGIN_HEADER, rec.topic)
        headers = set_header(headers, ATTEMPT, str(d.get("attempt") or 0))
        value = self.ctx.codec.encode("Delivery", d) if spent else (rec.value or b"")
        return OutRecord(topic, rec.key, value, headers)

    def _dead(self, rec: InRecord, why: DeadLetter) -> OutRecord:
        return dead_letter(rec, why, self.dlq_topic, self.ctx.settings.max_record_bytes)

    def _count(self, what: str) -> None:
        counter = self._counters.get(what)
        if counter is None:  # labels() takes a lock and builds a key: once per outcome, not per delivery
            counter = self._counters[what] = self.ctx.metrics.deliveries.labels(self.channel, self.sink.provider, what)
        counter.inc()


def _ms(value: Any) -> int:
    return value if isinstance(value, int) else int(value.timestamp() * 1000)


def specs(settings: Settings) -> list[AgentSpec]:
    gate = LaneGate()  # one per worker process: interactive and bulk agents of a channel share it
    tuning = settings.deliver
    out: list[AgentSpec] = []
    for channel in CHANNELS:
        for lane in ("interactive", "bulk"):
            def build(ctx: Context, channel: str = channel, lane: str = lane) -> Any:
                async def make() -> DeliverHandler:
                    return DeliverHandler(ctx, channel, lane, build_sink(ctx.settings, channel), gate, tuning)
                return make()
            name = f"deliver-{channel}" + ("-bulk" if lane == "bulk" else "")
            out.append(AgentSpec(name, [deliver_topic(settings, channel, lane)], build))
    return out
