"""The deliver agents: one per channel and lane, each calling its channel's provider sink.

Per batch: decode → first occurrences and expiry → claim in the ledger (one
statement) → per provider chunk: circuit admit, sink call, observe, record the
chunk's outcome (the ledger's marks; on the bulk lane its status rows) → status changes, retries, dead letters,
device updates. The decisions are the pure functions of ``streams.stages.deliver``;
the ledger, the circuit and the devices are stores (``streams.stores``), each
with an in-memory twin, so this module holds only the choreography.

The crash window. A delivery is claimed before the call and recorded ``sent``
right after its chunk returns: the ledger row marked (the interactive lane), or
the chunk's status rows written with the delivery's sent-once history row,
which the ledger's claim reads as 'sent' (the bulk lane, which writes its
statuses itself: one UPDATE less per campaign recipient). A crash (SIGKILL, power loss) *between the
provider accepting a chunk and that record* leaves those rows ``claimed``: on
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
import contextlib
import logging
import time
from collections import Counter as CounterOf
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from infra.kafka.dead_letters import DeadLetter, dead_letter
from infra.kafka.records import InRecord, OutRecord, now_ms
from infra.settings import DeliverTuning, Settings
from infra.topics import deliver_topic
from infra.tracing import record_span
from schemas.codec import DecodeError
from schemas.records import Delivery, StatusChange, chunk_deliveries, epoch_ms
from schemas.vocabulary import CHANNELS, Channel, Lane, LedgerStatus, Status
from sinks.base import Result, Sent, Sink
from sinks.errors import DeliveryError, ProviderRejected, RateLimited, Retryable
from sinks.factory import build_failover_sink, build_sink
from streams.metrics import observe_many
from streams.routes import load_routes
from streams.runtime.context import Context
from streams.runtime.registry import AgentSpec
from streams.runtime.runner import is_infra_error, until_reachable
from streams.stages.deliver import (
    STATE_GAUGE,
    Action,
    Breaker,
    DeadLetterIt,
    DeliverConfig,
    HandBack,
    MarkSent,
    ScheduleRetry,
    WaitAndResend,
    admit,
    device_effects,
    failure,
    first_occurrences,
    observation,
    observe,
    outcome,
    pause,
)
from streams.stages.retry import Ladder, held_headers
from streams.stages.status_change import encode_status
from streams.stages.status_fold import fold
from streams.stores.campaigns import CancelStore, MemoryCampaignRows, PostgresCampaignRows
from streams.stores.cancellations import CancellationView, MemoryCancellationRows, PostgresCancellationRows
from streams.stores.circuit import Change, Circuit, MemoryCircuit, RedisCircuit
from streams.stores.devices import Devices, MemoryDevices, PostgresDevices
from streams.stores.ledger import Ledger, Mark, MemoryLedger, PostgresLedger
from streams.stores.recipients import invalidate_recipients
from streams.stores.statuses import MemoryStatusStore, PostgresStatusStore, StatusStore

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
            with contextlib.suppress(TimeoutError):  # never starve the bulk lane completely
                await asyncio.wait_for(event.wait(), max_wait)
        await asyncio.sleep(0)


@dataclass(frozen=True)
class DeliverStores:
    """What a deliver handler reads and writes besides Kafka: the real stores, or their in-memory twins."""

    ledger: Ledger
    circuit: Circuit
    devices: Devices
    statuses: StatusStore | None = None   # the bulk lane writes its statuses itself (None: through the status topic)
    cancels: CancelStore | None = None    # canceled campaigns (None: not looked at)
    cancellations: CancellationView | None = None   # canceled keys and notifications (None: not looked at)
    failover_circuit: Circuit | None = None   # the second provider's circuit (None: no second provider)

    @classmethod
    def of(cls, ctx: Context, provider: str, tuning: DeliverTuning, failover: str | None = None) -> DeliverStores:
        return cls.real(ctx.db, ctx.redis, ctx.settings, provider, tuning, failover)

    @classmethod
    def real(cls, db: AsyncConnectionPool, redis: aioredis.Redis, settings: Settings, provider: str,
             tuning: DeliverTuning, failover: str | None = None) -> DeliverStores:
        async def drop_cached(user_ids: list[str]) -> None:
            # a deactivated token must not be served from the recipient cache for its TTL (5 minutes)
            await invalidate_recipients(redis, settings, user_ids)

        return cls(PostgresLedger(db, tuning.claim_lease),
                   RedisCircuit.for_provider(redis, settings, provider),
                   PostgresDevices(db, tuning.device_failure_limit, on_deactivated=drop_cached),
                   PostgresStatusStore(db) if tuning.bulk_statuses_direct else None,
                   CancelStore(PostgresCampaignRows(db), settings.campaign.cancel_cache_seconds),
                   CancellationView(PostgresCancellationRows(db), settings.campaign.cancel_cache_seconds,
                                    settings.retention.cancellations_days),
                   RedisCircuit.for_provider(redis, settings, failover) if failover else None)

    @classmethod
    def memory(cls, tuning: DeliverTuning) -> DeliverStores:
        statuses = MemoryStatusStore() if tuning.bulk_statuses_direct else None
        ledger = MemoryLedger(tuning.claim_lease, history_sent=statuses.sent if statuses is not None else None)
        return cls(ledger, MemoryCircuit(), MemoryDevices(tuning.device_failure_limit), statuses,
                   CancelStore(MemoryCampaignRows(), 0.0), CancellationView(MemoryCancellationRows(), 0.0),
                   MemoryCircuit())


Item = tuple[InRecord, Delivery]


def agent_name(channel: Channel, lane: Lane, critical: bool = False) -> str:
    if lane == Lane.BULK:
        return f"deliver-{channel}-bulk"
    return f"deliver-{channel}" + ("-critical" if critical else "")


class DeliverHandler:
    stage = "deliver"

    def __init__(self, ctx: Context, channel: Channel, lane: Lane, sink: Sink, gate: LaneGate, tuning: DeliverTuning,
                 stores: DeliverStores | None = None, critical: frozenset[str] = frozenset({"security"}),
                 failover: Sink | None = None, critical_lane: bool = False) -> None:
        self.ctx, self.channel, self.lane, self.sink, self.gate = ctx, Channel(channel), Lane(lane), sink, gate
        self.failover = failover   # the second provider, called while the first one's circuit is open
        self._in_call: Sink | None = None   # the sink whose answers are being applied (metrics per provider)
        self.critical = critical   # categories sent first in every batch and chunk (a password reset before an order)
        # the agent of the critical topic (deliver.<channel>.critical): an interactive agent with a sink of its own
        self.critical_lane = critical_lane and self.lane == Lane.INTERACTIVE
        self.name = agent_name(self.channel, self.lane, self.critical_lane)
        self.cfg = DeliverConfig(tuning.breaker_failures, tuning.breaker_open_seconds, tuning.breaker_close_after,
                                 tuning.max_rate_wait, tuning.rate_wait_budget, tuning.claim_lease, tuning.device_failure_limit)
        self.chunk = max(1, min(sink.max_batch, tuning.max_chunk))
        self.ladder = Ladder.from_settings(ctx.settings)
        self.stores = stores or DeliverStores.of(ctx, sink.provider, tuning, failover.provider if failover else None)
        self.status_topic = ctx.settings.topic("status")
        self.dlq_topic = ctx.settings.topic("dlq")
        self._counters: dict[tuple[str, str], Any] = {}
        # labels() takes a lock and builds a key: once here, not per delivery
        self._latency = ctx.metrics.e2e_latency.labels(self.channel, "critical" if self.critical_lane else self.lane)
        # a batch's outcomes and end-to-end waits, added to the metrics once per batch: a campaign chunk's thousand
        # deliveries share one event time and one provider answer, so they make one observation of a thousand
        self._tally: CounterOf[tuple[str, str]] = CounterOf()
        self._waits: CounterOf[float] = CounterOf()
        # deliveries this handler claimed and has not handed to its sink yet, with the claim's monotonic time: a batch
        # retried after an outage between claim and call (Redis gone at the circuit check, say) finds these claims
        # young, and they are its own, with no call behind them; taking them for a live call elsewhere would hold
        # them back for the whole lease (2 minutes for a password reset)
        self._unsent: dict[str, float] = {}
        self._changes: list[StatusChange] = []   # the batch's status changes, when this handler writes them
        self._direct = self.stores.statuses is not None and self.lane == Lane.BULK   # it writes them (the bulk lane)

    async def handle(self, batch: list[InRecord]) -> list[OutRecord]:
        started = time.time_ns()
        try:
            if self.lane == Lane.INTERACTIVE:
                async with self.gate.interactive(self.channel):
                    out = await self._handle(batch)
            else:
                out = await self._handle(batch)
        finally:
            self._flush_metrics()
        if self.ctx.tracer is not None:
            ended = time.time_ns()
            for rec in batch:
                record_span(self.ctx.tracer, self.name, rec.trace_id, started, ended, topic=rec.topic,
                            partition=rec.partition, offset=rec.offset, batch_records=len(batch))
        return out

    async def _handle(self, batch: list[InRecord]) -> list[OutRecord]:
        out: list[OutRecord] = []
        self._changes = []
        live = self._live(self._decode(batch, out), out)
        live, _ = await self._not_canceled(live, out)
        if self.lane == Lane.INTERACTIVE:
            live.sort(key=lambda item: item[1].category not in self.critical)   # stable: critical first, else in order
        to_send = await self._claim(live, out)
        effects: list[tuple[str, Result]] = []
        await self._send(to_send, out, effects)
        if self.channel == Channel.PUSH and effects:
            await self.stores.devices.apply(device_effects([token for token, _ in effects], [r for _, r in effects]))
        if self._changes:
            # after the calls' records: a failure here retries the batch, whose ledger then says 'sent' again
            await self._write_changes()
        return out

    def _decode(self, batch: list[InRecord], out: list[OutRecord]) -> list[Item]:
        items: list[Item] = []
        decode = self.ctx.codec.decode
        for rec in batch:
            try:
                decoded = decode(rec.value)
                if decoded.name == "DeliveryChunk":
                    try:
                        ds = chunk_deliveries(decoded.record)
                    except ValueError as exc:   # v2: slot values that do not fit the shared parts
                        raise DecodeError("corrupt", f"DeliveryChunk {decoded.record['chunk_id']}: {exc}") from exc
                    # each delivery of the chunk stands on its own from here on: a record without a value, whose
                    # retry record and dead letter carry that Delivery encoded alone (``_value``), not the chunk
                    items.extend((InRecord(rec.topic, rec.partition, rec.offset, d.user_id.encode(), None, rec.headers), d)
                                 for d in ds)
                    continue
                if decoded.name != "Delivery":
                    raise DecodeError("wrong_type", f"expected Delivery or DeliveryChunk, got {decoded.name}")
                items.append((rec, Delivery.from_avro(decoded.record)))
            except DecodeError as exc:
                out.append(self._dead(rec, DeadLetter("decode", exc.reason, str(exc))))
        return items

    def _live(self, items: list[Item], out: list[OutRecord]) -> list[Item]:
        """The batch's first copy of each delivery that has not expired (an expired one says so)."""
        now = now_ms()
        live: list[Item] = []
        for (rec, d), first in zip(items, first_occurrences([d.delivery_id for _, d in items]), strict=True):
            if not first:
                self._count("duplicate")
            elif d.expires_at is not None and epoch_ms(d.expires_at) < now:
                self._say(out, rec, d, Status.EXPIRED, reason="expired before delivery")
                self._count("expired")
            else:
                live.append((rec, d))
        return live

    async def _claim(self, live: list[Item], out: list[OutRecord]) -> list[Item]:
        """Claim in the ledger; returns the items this worker is to send."""
        if not live:
            return []
        now = now_ms()
        to_send: list[Item] = []
        claims = await self.stores.ledger.claim([d for _, d in live])
        mono = time.monotonic()
        self._forget_old_claims(mono)
        for item, claim in zip(live, claims, strict=True):
            if claim.decision == "send":
                self._unsent.pop(item[1].delivery_id, None)   # insertion order stays claim order: the oldest first
                self._unsent[item[1].delivery_id] = mono
                to_send.append(item)
            elif claim.decision == "in_flight" and item[1].delivery_id in self._unsent:
                # our own claim, younger than the lease (so nobody else took it over) and never called: send it now
                to_send.append(item)
                self._count("reclaimed")
            elif claim.decision == "already_sent":
                # said again: this batch may be a retry whose first run sent it and then lost its outputs
                # (Kafka, Redis or PostgreSQL went away); a 'sent' never moves a later status backwards
                self._say(out, item[0], item[1], Status.SENT, provider_message_id=claim.provider_message_id)
                self._count("already_sent")
            else:  # claimed by a call that may still be running elsewhere: look again later
                out.append(self._retry_record(item[0], item[1], self.ladder.topics[0],
                                              now + int(self.cfg.claim_lease * 1000), spent=False))
                self._count("in_flight")
        return to_send

    async def _send(self, queue: list[Item], out: list[OutRecord], effects: list[tuple[str, Result]]) -> None:
        waited = 0.0
        for _ in range(100_000):  # bounded: every pass consumes the queue or waits within the budget
            if not queue:
                return
            chunk, queue = queue[: self.chunk], queue[self.chunk:]
            if self.lane == Lane.BULK:
                await self.gate.wait_idle(self.channel)
            sink, circuit, breaker = await self._provider()   # the primary, or the failover while its circuit is open
            if len(chunk) > sink.max_batch:
                chunk, queue = chunk[:sink.max_batch], chunk[sink.max_batch:] + queue
            now = now_ms()
            if breaker.paused_until_ms > now:
                wait = (breaker.paused_until_ms - now) / 1000
                if wait <= self.cfg.max_rate_wait and waited + wait <= self.cfg.rate_wait_budget:
                    await asyncio.sleep(wait)
                    waited += wait
                    now = now_ms()
                else:
                    await self._hand_back(chunk + queue, out, breaker.paused_until_ms, "rate limited")
                    return
            chunk, stopped = await self._not_canceled(chunk, out)   # after any wait: a cancel during a long batch stops its next call
            if stopped:
                await self.stores.ledger.mark([Mark(d.delivery_id, LedgerStatus.FAILED, None, "canceled")
                                               for _, d in stopped])
                self._release(stopped)
                if not chunk:
                    continue
            admitted, allowance = admit(breaker, now, self.cfg)
            if admitted != breaker:
                breaker = self._export(await circuit.update(lambda cur: admit(cur, now, self.cfg)[0]), sink)  # noqa: B023 - awaited in this iteration
            if allowance == 0:
                await self._fail_all(chunk + queue, Retryable("circuit open: provider not called"), out)
                return
            if allowance is not None and allowance < len(chunk):
                chunk, queue = chunk[:allowance], chunk[allowance:] + queue
            for _, d in chunk:   # from here on a retry of the batch must take the claim for a call that may have happened
                self._unsent.pop(d.delivery_id, None)
            results = await self._call(chunk, sink)
            now = now_ms()
            seen = [observation(r) for r in results]
            limits = [r.retry_after for r in results if isinstance(r, RateLimited)]

            def change(cur: Breaker, seen=seen, limits=limits, now=now) -> Breaker:
                cur = observe(cur, seen, now, self.cfg)
                return pause(cur, max(limits), now) if limits else cur

            await self._observe(change, circuit, sink, known=breaker)
            answered = [(sink, chunk, results)]
            if sink is self.sink and self.failover is not None and any(isinstance(r, ProviderRejected) for r in results):
                answered = await self._fail_over(chunk, results)
                limits += [r.retry_after for _, _, got in answered[1:] for r in got if isinstance(r, RateLimited)]
                now = now_ms()
            resend: list[Item] = []
            marks: list[Mark] = []
            for used, items, got in answered:
                self._in_call = used
                for (rec, d), result in zip(items, got, strict=True):
                    action = outcome(d, result, self.ladder, now, self.cfg, waited)
                    if isinstance(action, WaitAndResend):
                        resend.append((rec, d))
                        continue
                    marks.append(self._apply(rec, d, action, out, now))
                    if self.channel == Channel.PUSH:
                        effects.append((d.address, result))
            self._in_call = None
            await self._mark_after_call(marks)
            if resend:
                wait = max(limits)
                await asyncio.sleep(wait)
                waited += wait
                queue = resend + queue

    async def _not_canceled(self, items: list[Item], out: list[OutRecord]) -> tuple[list[Item], list[Item]]:
        """(the items to go on with, those of canceled campaigns, keys or notifications: said 'canceled', never sent);
        one look per call."""
        cancels, view = self.stores.cancels, self.stores.cancellations
        stopped = await cancels.canceled({d.campaign_id for _, d in items}) if cancels is not None else set()
        if view is not None:
            await view.refresh()
            if view.empty:
                view = None
        if not stopped and view is None:
            return items, []
        why: dict[str, str] = {}
        for _, d in items:
            if d.campaign_id in stopped:
                why[d.delivery_id] = "campaign canceled"
            elif view is not None and (reason := view.reason(d.notification_id, d.cancellation_key, epoch_ms(d.occurred_at))):
                why[d.delivery_id] = reason
        if not why:
            return items, []
        keep: list[Item] = []
        dropped: list[Item] = []
        for rec, d in items:
            if d.delivery_id in why:
                self._say(out, rec, d, Status.CANCELED, reason=why[d.delivery_id])
                self._count("canceled")
                dropped.append((rec, d))
            else:
                keep.append((rec, d))
        return keep, dropped

    def _apply(self, rec: InRecord, d: Delivery, action: Action, out: list[OutRecord], now: int) -> Mark:
        if isinstance(action, MarkSent):
            self._count("sent")
            self._waits[max(0.0, (now - epoch_ms(d.occurred_at)) / 1000)] += 1
            self._say(out, rec, d, Status.SENT, provider_message_id=action.provider_message_id)
            return Mark(d.delivery_id, LedgerStatus.SENT, action.provider_message_id)
        if isinstance(action, ScheduleRetry):
            self._count("retry")
            self.ctx.metrics.retries.labels(str(action.tier)).inc()
            out.append(self._retry_record(rec, action.delivery, action.topic, action.due_ms, spent=True))
            # the attempt, its error and where it waits belong in the notification's history, not only in the ledger
            due = datetime.fromtimestamp(action.due_ms / 1000, UTC).isoformat(timespec="seconds")
            self._say(out, rec, d, Status.RETRYING, reason=(
                f"attempt {action.delivery.attempt} failed: {action.delivery.last_error or 'no reason given'}; "
                f"retry tier {action.tier + 1} ({action.topic}) at {due}")[:500])
            return Mark(d.delivery_id, LedgerStatus.FAILED, None, action.delivery.last_error)
        if isinstance(action, DeadLetterIt):
            self._count(action.error_class)
            self.ctx.metrics.dead_letters.labels("deliver", action.error_class).inc()
            out.append(self._dead(rec, DeadLetter("deliver", action.error_class, action.reason, action.attempts,
                                                  action.first_failure_ms), d))
            self._say(out, rec, d, Status.FAILED, reason=f"{action.error_class}: {action.reason}"[:500])
            return Mark(d.delivery_id, LedgerStatus.FAILED, None, action.reason[:1000])
        assert isinstance(action, HandBack)
        self._count("handed_back")
        out.append(self._retry_record(rec, d, action.topic, action.due_ms, spent=False))
        return Mark(d.delivery_id, LedgerStatus.FAILED, None, action.reason)

    async def _provider(self) -> tuple[Sink, Circuit, Breaker]:
        """The primary sink with its circuit and state; the failover's while the primary's circuit is open (not
        merely paused by a 429) and the failover's admits a call. Both open: the primary's, which sends the work to
        the retry ladder. The ledger claimed each delivery before either call: one send across providers."""
        breaker = self._export(await self.stores.circuit.load(), self.sink)
        other = self.stores.failover_circuit
        if self.failover is None or other is None or admit(breaker, now_ms(), self.cfg)[1] != 0:
            return self.sink, self.stores.circuit, breaker
        second = self._export(await other.load(), self.failover)
        if admit(second, now_ms(), self.cfg)[1] == 0:
            return self.sink, self.stores.circuit, breaker
        return self.failover, other, second

    async def _fail_over(self, chunk: list[Item], results: list[Result]) -> list[tuple[Sink, list[Item], list[Result]]]:
        """The deliveries the primary refused for its account (authentication, quota) go to the second provider at
        once, when its circuit admits them; (sink, items, results) per provider that answered. The ledger claim made
        before the first call still holds: the primary sent none of them."""
        assert self.failover is not None and self.stores.failover_circuit is not None
        moved = [i for i, r in enumerate(results) if isinstance(r, ProviderRejected)]
        circuit = self.stores.failover_circuit
        now = now_ms()
        second = self._export(await circuit.load(), self.failover)
        admitted, allowance = admit(second, now, self.cfg)
        if admitted != second:
            self._export(await circuit.update(lambda cur: admit(cur, now, self.cfg)[0]), self.failover)
        if allowance == 0 or second.paused_until_ms > now:
            return [(self.sink, chunk, results)]
        if allowance is not None:
            moved = moved[:allowance]
        items = [chunk[i] for i in moved]
        again = await self._call(items, self.failover)
        seen, at = [observation(r) for r in again], now_ms()
        await self._observe(lambda cur: observe(cur, seen, at, self.cfg), circuit, self.failover)
        stay = sorted(set(range(len(chunk))) - set(moved))
        return [(self.sink, [chunk[i] for i in stay], [results[i] for i in stay]), (self.failover, items, again)]

    async def _call(self, chunk: list[Item], sink: Sink) -> list[Result]:
        started, started_ns = time.perf_counter(), time.time_ns()
        try:
            results = await sink.send_batch([d for _, d in chunk])
            if len(results) != len(chunk):
                raise RuntimeError(f"sink returned {len(results)} results for {len(chunk)} deliveries")
        except Exception as exc:
            log.exception("%s: sink %s failed", self.name, sink.provider)
            results = [Retryable(f"sink error: {exc!r}") for _ in chunk]
        self.ctx.metrics.provider_latency.labels(sink.provider).observe(time.perf_counter() - started)
        if self.ctx.tracer is not None:
            ended = time.time_ns()
            for (rec, d), result in zip(chunk, results, strict=True):
                record_span(self.ctx.tracer, f"provider call: {sink.provider}", rec.trace_id, started_ns, ended,
                            delivery_id=d.delivery_id, notification_id=d.notification_id, chunk=len(chunk),
                            outcome="sent" if isinstance(result, Sent) else type(result).__name__)
        return results

    def _release(self, items: list[Item]) -> None:
        """Marked failed without a call: the row is anyone's to claim now, so a young claim on it is no longer ours."""
        for _, d in items:
            self._unsent.pop(d.delivery_id, None)

    def _forget_old_claims(self, mono: float) -> None:
        """Own claims are trusted only well inside the lease: past it another worker may have taken the row over."""
        horizon = mono - self.cfg.claim_lease * 0.5
        if self._unsent and next(iter(self._unsent.values())) < horizon:
            self._unsent = {k: t for k, t in self._unsent.items() if t >= horizon}

    async def _fail_all(self, items: list[Item], err: DeliveryError, out: list[OutRecord]) -> None:
        now = now_ms()
        await self.stores.ledger.mark([self._apply(rec, d, failure(d, err, self.ladder, now), out, now)
                                       for rec, d in items])
        self._release(items)

    async def _hand_back(self, items: list[Item], out: list[OutRecord], due_ms: int, reason: str) -> None:
        now = now_ms()
        back = HandBack(self.ladder.topics[0], due_ms, reason)
        await self.stores.ledger.mark([self._apply(rec, d, back, out, now) for rec, d in items])
        self._release(items)

    # --- stores -----------------------------------------------------------------
    async def _observe(self, change: Change, circuit: Circuit, sink: Sink, known: Breaker | None = None) -> None:
        """Feed the call's outcome to the shared circuit; without Redis the breaker misses one observation.

        ``known``: the state read just before the call. When the outcome changes nothing in it (a closed circuit
        without failures, every result fine), the shared state is left alone: a healthy provider costs one read
        per call, not a read and a watched transaction (three more round trips on the interactive lane)."""
        if known is not None and change(known) == known:
            return
        try:
            self._export(await circuit.update(change), sink)
        except Exception as exc:
            if not is_infra_error(exc):
                raise
            log.warning("%s: circuit state not updated (%r)", self.name, exc)

    async def _mark_after_call(self, marks: list[Mark]) -> None:
        """The provider has answered: what it said must reach the ledger, or a retry of the batch would take
        these rows for calls still in flight and send them again after the lease. Waits out a PostgreSQL outage.

        A handler that writes its statuses itself writes them now, the chunk's sent-once history rows among them,
        and leaves its sent rows 'claimed': the claim reads those history rows as 'sent'."""
        async def mark(marks: list[Mark]) -> None:
            await until_reachable(lambda: self.stores.ledger.mark(marks), f"{self.name}: ledger after a provider call")

        if self._direct:
            try:
                await until_reachable(self._write_changes, f"{self.name}: statuses after a provider call")
            except Exception:
                # not an outage: rows PostgreSQL refuses. The sends go to the ledger as the interactive lane's do, or
                # a retry of the batch would find bare claims and, after the lease, send them again
                await mark(marks)
                raise
            marks = [m for m in marks if m.status != LedgerStatus.SENT]
        if marks:
            await mark(marks)

    async def _write_changes(self) -> None:
        """The status changes said so far, in one transaction; kept for the next try when it fails."""
        assert self.stores.statuses is not None
        if self._changes:
            await self.stores.statuses.write(fold(self._changes))
            self._changes = []

    def _export(self, breaker: Breaker, sink: Sink) -> Breaker:
        self.ctx.metrics.circuit_state.labels(sink.provider).set(STATE_GAUGE[breaker.state])
        return breaker

    # --- records ----------------------------------------------------------------
    def _say(self, out: list[OutRecord], rec: InRecord, d: Delivery, status: Status, **kw: Any) -> None:
        """A status change: a record for the status agent, or (the bulk lane) a row this handler writes itself."""
        change = StatusChange(
            notification_id=d.notification_id, event_id=d.event_id, user_id=d.user_id, status=status, at=now_ms(),
            event_type=d.event_type, channel=self.channel, delivery_id=d.delivery_id, template=d.template,
            category=d.category, campaign_id=d.campaign_id, trace_id=rec.trace_id, **kw,
        )
        if self._direct:
            self._changes.append(change)
        else:
            out.append(encode_status(self.ctx.codec, self.status_topic, change, rec.trace_id))

    def _retry_record(self, rec: InRecord, d: Delivery, topic: str, due_ms: int, spent: bool) -> OutRecord:
        headers = held_headers(rec.headers, due_ms, rec.topic, d.attempt or 0)
        value = self.ctx.codec.encode("Delivery", d.to_avro()) if spent or rec.value is None else rec.value
        return OutRecord(topic, rec.key, value, headers)

    def _dead(self, rec: InRecord, why: DeadLetter, d: Delivery | None = None) -> OutRecord:
        if rec.value is None and d is not None:   # one delivery of a chunk: its own bytes, not the chunk's
            rec = replace(rec, value=self.ctx.codec.encode("Delivery", d.to_avro()))
        return dead_letter(rec, why, self.dlq_topic, self.ctx.settings.max_record_bytes)

    def _count(self, what: str) -> None:
        self._tally[((self._in_call or self.sink).provider, what)] += 1

    def _flush_metrics(self) -> None:
        for key, n in self._tally.items():
            counter = self._counters.get(key)
            if counter is None:  # labels() takes a lock and builds a key: once per outcome, not per delivery
                counter = self._counters[key] = self.ctx.metrics.deliveries.labels(self.channel, *key)
            counter.inc(n)
        for seconds, n in self._waits.items():
            observe_many(self._latency, seconds, n)
        self._tally.clear()
        self._waits.clear()


def specs(settings: Settings) -> list[AgentSpec]:
    gate = LaneGate()  # one per worker process: interactive and bulk agents of a channel share it
    tuning = settings.deliver
    critical = load_routes(settings.routes_file).critical_categories
    out: list[AgentSpec] = []
    for channel in CHANNELS:
        for lane, critical_lane in ((Lane.INTERACTIVE, False), (Lane.INTERACTIVE, True), (Lane.BULK, False)):
            def build(ctx: Context, channel: Channel = channel, lane: Lane = lane, critical_lane: bool = critical_lane) -> Any:
                async def make() -> DeliverHandler:
                    # every agent has a sink (connections) of its own: a password reset never waits for an order's
                    return DeliverHandler(ctx, channel, lane, build_sink(ctx.settings, channel), gate, tuning,
                                          critical=critical, failover=build_failover_sink(ctx.settings, channel),
                                          critical_lane=critical_lane)
                return make()
            out.append(AgentSpec(agent_name(channel, lane, critical_lane),
                                 [deliver_topic(settings, channel, lane, critical_lane)], build,
                                 batch_bytes=settings.bulk_batch_bytes if lane == Lane.BULK else None,
                                 ready=lane == Lane.INTERACTIVE, ahead=tuning.bulk_ahead if lane == Lane.BULK else 1))
    return out
