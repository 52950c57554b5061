"""The route agents: events (interactive) and bulk → rendered Deliveries, status changes, scheduled rows.

Per batch, whatever its size: two Redis round trips (an MGET of cached
recipients and one script doing every de-duplication SET NX GET; cache fills
for the misses and the one rate-limit script) and at most four PostgreSQL statements (recipient cache
misses, templates not loaded recently, the de-duplication authority, the
scheduled rows), the first three run concurrently. A render failure adds one
more of each, to release the claims of the failed channels so that a replay
from the DLQ is not taken for a duplicate.
"""
from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

from psycopg_pool import AsyncConnectionPool

from infra.settings import Settings
from infra.topics import deliver_topic
from schemas.codec import DecodeError
from streams.runtime.registry import AgentSpec
from streams.runtime.context import Context
from infra.kafka.dead_letters import DeadLetter, dead_letter
from streams.stores.ratelimits import queue_checks
from streams.stores.recipients import load_recipients, parse_cached, queue_fill, recipient_key
from infra.kafka.records import TRACE, InRecord, OutRecord, now_ms, record_size, set_header
from streams.routes import RouteConfig, load_routes
from streams.stages.route.decide import channel_decision, delivery_record, push_data, template_context
from streams.stages.route.identity import claim_origin, classify_claim
from streams.stages.route.intent import Intent, RouteError, intent_for
from streams.stages.route.limits import Counter, counters, denied_by
from streams.stages.route.recipient import Recipient
from streams.stages.route.render import RenderFailure, render
from streams.stages.route.timing import is_expired, is_for_later, quiet_until
from streams.stages.status_change import status_record
from streams.templates import TemplateStore

log = logging.getLogger("herald.route")

# the de-duplication fast path for a whole batch in one command: SET NX GET per key.
# KEYS: dedup keys; ARGV[1]: ttl; ARGV[i + 1]: the claim origin for KEYS[i]. Returns per key the previous origin or "".
CLAIM_LUA = """
local out = {}
for i = 1, #KEYS do
  local prev = redis.call('SET', KEYS[i], ARGV[i + 1], 'NX', 'GET', 'EX', ARGV[1])
  if prev then out[i] = prev else out[i] = '' end
end
return out
"""

CLAIM_SQL = """
WITH input AS (
    SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) AS t(event_id, channel, origin)
), ins AS (
    INSERT INTO dedup (event_id, channel, origin) SELECT event_id, channel, origin FROM input
    ON CONFLICT DO NOTHING RETURNING event_id, channel
)
SELECT i.event_id, i.channel, (ins.event_id IS NOT NULL OR d.origin = i.origin) AS mine
FROM input i
LEFT JOIN ins ON ins.event_id = i.event_id AND ins.channel = i.channel
LEFT JOIN dedup d ON d.event_id = i.event_id AND d.channel = i.channel
"""

RELEASE_SQL = """
DELETE FROM dedup d USING unnest(%s::text[], %s::text[], %s::text[]) AS t(event_id, channel, origin)
WHERE d.event_id = t.event_id AND d.channel = t.channel AND d.origin = t.origin
"""

SCHEDULE_SQL = """
INSERT INTO scheduled (due_at, topic, key, value, headers, kind, notification_id, dedup_key)
SELECT due_at, topic, key, value, headers::jsonb, kind, notification_id, dedup_key
FROM unnest(%s::timestamptz[], %s::text[], %s::bytea[], %s::bytea[], %s::text[], %s::text[], %s::text[], %s::text[])
     AS t(due_at, topic, key, value, headers, kind, notification_id, dedup_key)
ON CONFLICT (dedup_key) DO NOTHING
"""


@dataclass(slots=True)
class Candidate:
    """One (event, channel) of a live record."""

    rec: InRecord
    intent: Intent
    channel: str
    origin: str
    claim: str = "new"
    addresses: list[str] = field(default_factory=list)
    limits: list[Counter] = field(default_factory=list)


@dataclass
class ScheduledRow:
    due_ms: int
    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    kind: str
    notification_id: str
    dedup_key: str


@dataclass
class BatchResult:
    out: list[OutRecord] = field(default_factory=list)
    scheduled: list[ScheduledRow] = field(default_factory=list)
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)

    def count(self, outcome: str, reason: str = "", n: int = 1) -> None:
        self.outcomes[(outcome, reason)] = self.outcomes.get((outcome, reason), 0) + n


def headers_json(rec: InRecord) -> dict[str, str]:
    """Headers of a scheduled row: {name: utf-8 value}; the scheduler writes them back unchanged."""
    return {k: (v or b"").decode("utf-8", "replace") for k, v in rec.headers}


class RouteHandler:
    stage = "route"

    def __init__(self, ctx: Context, cfg: RouteConfig, templates: TemplateStore, name: str = "route") -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.templates = templates
        self.name = name
        s = ctx.settings
        self.bulk_topic = s.topic("bulk")
        self.status_topic = s.topic("status")
        self.dlq_topic = s.topic("dlq")
        self.max_event_bytes = s.max_event_bytes

    # --- the batch ---------------------------------------------------------------

    async def handle(self, batch: list[InRecord]) -> list[OutRecord]:
        now = now_ms()
        res = BatchResult()
        live = [x for rec in batch if (x := self._admit(rec, now, res)) is not None]
        cands = [Candidate(rec, it, ch, claim_origin(rec.topic, rec.partition, rec.offset)) for rec, it in live for ch in it.channels]
        if cands:
            await self._route(cands, now, res)
        if res.scheduled:
            await self._schedule(res.scheduled)
        m = self.ctx.metrics.stage_outcomes
        for (outcome, reason), n in res.outcomes.items():
            m.labels(self.name, outcome, reason).inc(n)
        return res.out

    def _admit(self, rec: InRecord, now: int, res: BatchResult) -> tuple[InRecord, Intent] | None:
        """Steps 1, 2, 4, 5: decode, route, expiry, send_at. Returns the records that go on."""
        if len(rec.value or b"") > self.max_event_bytes:
            self._dead(rec, res, DeadLetter(
                "decode", "too_large", f"{len(rec.value or b''):,}-byte event over the {self.max_event_bytes:,}-byte limit "
                "(HERALD_MAX_EVENT_BYTES)"))
            return None
        try:
            decoded = self.ctx.codec.decode(rec.value)
        except DecodeError as exc:
            self._dead(rec, res, DeadLetter("decode", exc.reason, str(exc)))
            return None
        try:
            intent = intent_for(decoded, self.cfg, bulk=rec.topic == self.bulk_topic)
        except RouteError as exc:
            self._dead(rec, res, DeadLetter("route", exc.reason, str(exc)))
            return None
        if is_expired(intent, now):
            for ch in intent.channels:
                self._status(res, rec, intent, "expired", ch, "ttl")
            return None
        if is_for_later(intent, now):
            assert intent.send_at_ms is not None
            res.scheduled.append(ScheduledRow(
                intent.send_at_ms, rec.topic, rec.key, rec.value or b"", headers_json(rec), "send_at",
                intent.event_id, f"send_at:{intent.event_id}",
            ))
            self._status(res, rec, intent, "scheduled", None, "send_at")
            return None
        return rec, intent

    async def _route(self, cands: list[Candidate], now: int, res: BatchResult) -> None:
        s, redis, db = self.ctx.settings, self.ctx.redis, self.ctx.db
        users = list(dict.fromkeys(c.intent.user_id for c in cands))

        # Redis round trip 1: cached recipients (one MGET) + de-duplication fast path (one script)
        pipe = redis.pipeline(transaction=False)
        pipe.mget([recipient_key(s, u) for u in users])
        pipe.eval(CLAIM_LUA, len(cands), *[s.rkey("dedup", c.intent.event_id, c.channel) for c in cands],
                  s.dedup_ttl, *[c.origin for c in cands])
        cached, previous = await pipe.execute()
        recipients: dict[str, Recipient | None] = {u: parse_cached(r) for u, r in zip(users, cached)}
        for c, prev in zip(cands, previous):
            c.claim = classify_claim(prev, c.origin)
        misses = [u for u, r in recipients.items() if r is None]
        claiming = [c for c in cands if c.claim != "duplicate"]

        # PostgreSQL, concurrently: cache misses, the de-duplication authority, stale templates
        codes = {c.intent.template for c in claiming}
        loaded, mine, _ = await asyncio.gather(
            load_recipients(db, misses), self._claim(db, claiming), self.templates.refresh(db, codes)
        )
        recipients.update(loaded)

        # steps 6, 7: recipient (a stored user's profile wins over addresses a request brought), address, preferences
        for c in cands:
            if c.intent.inline is not None and recipients.get(c.intent.user_id) is None:
                recipients[c.intent.user_id] = c.intent.inline
        going: list[Candidate] = []
        for c in cands:
            if c.claim == "duplicate" or not mine.get((c.intent.event_id, c.channel), False):
                res.count("duplicate")
                continue
            decision = channel_decision(c.intent, c.channel, recipients.get(c.intent.user_id))
            if isinstance(decision, tuple):
                self._status(res, c.rec, c.intent, decision[0], c.channel, decision[1])
                continue
            c.addresses = decision
            c.limits = counters(self.cfg.rate_limits, s.rkey("rl"), user=c.intent.user_id, channel=c.channel,
                                category=c.intent.category, event_type=c.intent.event_type, now_ms=now)
            going.append(c)

        # Redis round trip 2: fill the cache + step 9, every rate limit of the batch in one script
        pipe = redis.pipeline(transaction=False)
        queue_fill(pipe, s, list(loaded.values()))
        limited = [c for c in going if c.limits]
        queued = queue_checks(pipe, [c.limits for c in limited], [s.rkey("rl-seen", c.intent.event_id, c.channel) for c in limited])
        replies = await pipe.execute() if len(pipe) else []
        if queued:
            denied = dict(zip(map(id, limited), denied_by([c.limits for c in limited], replies[-1])))
        else:
            denied = {}

        failed: list[tuple[Candidate, RenderFailure]] = []
        for c in going:
            if (rule := denied.get(id(c))) is not None:
                self._status(res, c.rec, c.intent, "rate_limited", c.channel, rule)
                continue
            self._render(c, recipients[c.intent.user_id], now, res, failed)  # type: ignore[arg-type]
        if failed:
            await self._fail_render(failed, res)

    # --- steps 8, 10, 11 ------------------------------------------------------------

    def _render(self, c: Candidate, r: Recipient, now: int, res: BatchResult, failed: list) -> None:
        it = c.intent
        tmpl = self.templates.pick(it.template, c.channel, r.locale)
        rendered = render(tmpl, c.channel, template_context(it, r), push_data(it))
        if isinstance(rendered, RenderFailure):
            failed.append((c, rendered))
            return
        assert tmpl is not None
        topic = deliver_topic(self.ctx.settings, c.channel, it.lane)
        key = it.user_id.encode()
        trace = c.rec.trace_id
        headers = set_header([], TRACE, trace)
        defer_until = None
        if c.channel in self.cfg.quiet_hours_channels and not it.critical:
            defer_until = quiet_until(now, r.time_zone, r.quiet_start, r.quiet_end)
        encoded = []
        for address in c.addresses:
            d = delivery_record(it, c.channel, address, tmpl, rendered)
            encoded.append((d, self.ctx.codec.encode("Delivery", d)))
        limit = self.ctx.settings.max_record_bytes
        if (largest := max((record_size(key, v, headers) for _, v in encoded), default=0)) > limit:
            # bad input, not an outage: only this record's channel is dead-lettered, the batch goes on
            failed.append((c, RenderFailure("too_large", f"the rendered {c.channel} is {largest:,} bytes, over the "
                                                         f"{limit:,}-byte record limit (HERALD_MAX_RECORD_BYTES)")))
            return
        for d, value in encoded:
            if defer_until is not None:
                res.scheduled.append(ScheduledRow(defer_until, topic, key, value, {TRACE: trace}, "quiet_hours",
                                                  it.event_id, f"quiet_hours:{d['delivery_id']}"))
                self._status(res, c.rec, it, "deferred", c.channel, "quiet_hours", d["delivery_id"])
            else:
                res.out.append(OutRecord(topic, key, value, headers))
                if it.lane != "bulk" or self.ctx.settings.queued_status_bulk:
                    self._status(res, c.rec, it, "queued", c.channel, None, d["delivery_id"])
                else:  # a campaign's notification row appears with its "sent": half the status traffic
                    res.count("queued", "")

    async def _fail_render(self, failed: list[tuple[Candidate, RenderFailure]], res: BatchResult) -> None:
        """Dead-letter each record once (naming every failed channel) and release those channels' claims."""
        by_rec: dict[int, list[tuple[Candidate, RenderFailure]]] = {}
        for c, f in failed:
            by_rec.setdefault(id(c.rec), []).append((c, f))
        for items in by_rec.values():
            c0, f0 = items[0]
            text = "; ".join(f"{c.channel}: {f.message}" for c, f in items)
            self._dead(c0.rec, res, DeadLetter("render", f0.reason, text))
        s = self.ctx.settings
        pipe = self.ctx.redis.pipeline(transaction=False)
        for c, _ in failed:
            pipe.delete(s.rkey("dedup", c.intent.event_id, c.channel))
        await pipe.execute()
        async with self.ctx.db.connection() as conn:
            await conn.execute(RELEASE_SQL, (
                [c.intent.event_id for c, _ in failed], [c.channel for c, _ in failed], [c.origin for c, _ in failed],
            ))

    # --- PostgreSQL ----------------------------------------------------------------

    async def _claim(self, db: AsyncConnectionPool, cands: list[Candidate]) -> dict[tuple[str, str], bool]:
        """The de-duplication authority: (event id, channel) → claimed by this record (now or before a crash)."""
        if not cands:
            return {}
        async with db.connection() as conn:
            rows = await (await conn.execute(CLAIM_SQL, (
                [c.intent.event_id for c in cands], [c.channel for c in cands], [c.origin for c in cands],
            ))).fetchall()
        out: dict[tuple[str, str], bool] = {}
        for event_id, channel, is_mine in rows:
            out[(event_id, channel)] = out.get((event_id, channel), False) or bool(is_mine)
        return out

    async def _schedule(self, rows: list[ScheduledRow]) -> None:
        async with self.ctx.db.connection() as conn:
            await conn.execute(SCHEDULE_SQL, (
                [datetime.fromtimestamp(r.due_ms / 1000, timezone.utc) for r in rows],
                [r.topic for r in rows], [r.key for r in rows], [r.value for r in rows],
                [json.dumps(r.headers) for r in rows], [r.kind for r in rows],
                [r.notification_id for r in rows], [r.dedup_key for r in rows],
            ))

    # --- outputs ---------------------------------------------------------------------

    def _status(self, res: BatchResult, rec: InRecord, it: Intent, status: str, channel: str | None,
                reason: str | None, delivery_id: str | None = None) -> None:
        res.out.append(status_record(
            self.ctx.codec, self.status_topic, notification_id=it.event_id, event_id=it.event_id, user_id=it.user_id,
            status=status, event_type=it.event_type, channel=channel, reason=reason, delivery_id=delivery_id,
            template=it.template, category=it.category, campaign_id=it.campaign_id, trace_id=rec.trace_id,
        ))
        res.count(status, reason or "")

    def _dead(self, rec: InRecord, res: BatchResult, why: DeadLetter) -> None:
        res.out.append(dead_letter(rec, why, self.dlq_topic, self.ctx.settings.max_record_bytes))
        self.ctx.metrics.dead_letters.labels(why.stage, why.error_class).inc()
        res.count("dead_lettered", why.error_class)


def specs(settings: Settings) -> list[AgentSpec]:
    from schemas.catalog import load_catalog

    catalog = load_catalog()
    known = {name: {f["name"] for f in catalog.latest(name).raw["fields"]} for name in catalog.versions}
    cfg = load_routes(settings.routes_file, known)  # a bad routes file stops the worker at start

    def build_for(name: str):
        async def build(ctx: Context) -> RouteHandler:
            return RouteHandler(ctx, cfg, TemplateStore(cfg.template_refresh_seconds), name)
        return build

    return [
        AgentSpec("route", [settings.topic("events")], build_for("route")),
        AgentSpec("route-bulk", [settings.topic("bulk")], build_for("route-bulk")),
    ]
