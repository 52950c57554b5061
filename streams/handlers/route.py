"""The route agents: events (interactive) and bulk → rendered Deliveries, status changes, scheduled rows.

A batch goes admit → cancel checks → waiting features (channel fallback and
digests, streams/handlers/route_waiting.py) → claim + load → decide → limit →
render → pack and write. Per batch, whatever its size: two Redis round trips
(cached recipients and every de-duplication claim; cache fills for the misses
and every rate limit) and at most four PostgreSQL statements (recipient cache
misses, templates not loaded recently, the de-duplication authority, the
scheduled rows), the first three run concurrently. A render failure adds one
more of each, to release the claims of the failed channels so that a replay
from the DLQ is not taken for a duplicate; a batch with fallback checks or
digest events adds the waiting features' own (at most one status read and two
digest transactions).

The SQL and Lua live in the stores (streams/stores), which queue their Redis
commands onto one shared batch; ``RouteStores.memory()`` runs the same handler
over their in-memory twins.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from infra.kafka.dead_letters import DeadLetter, dead_letter
from infra.kafka.records import (
    TRACE,
    InRecord,
    OutRecord,
    now_ms,
    record_size,
    set_header,
)
from infra.settings import Settings
from infra.topics import deliver_topic, events_topic
from infra.tracing import record_span
from schemas.codec import Codec, DecodeError
from schemas.records import Delivery, SharedContent, chunk_key, chunk_record, unshare
from schemas.vocabulary import Channel, Lane, Status
from streams.handlers.route_waiting import Admitted, Returned, Waiting, returned
from streams.routes import RouteConfig, load_routes
from streams.runtime.context import Context
from streams.runtime.registry import AgentSpec
from streams.stages.route.chunks import CHUNK_FRAME_BYTES, approx_size, pack_groups
from streams.stages.route.decide import (
    channel_decision,
    delivery_record,
    push_data,
    template_context,
)
from streams.stages.route.identity import ClaimState, claim_origin
from streams.stages.route.intent import Intent, RouteError, chunk_intents, intent_for
from streams.stages.route.limits import Counter, counters
from streams.stages.route.recipient import TEMPLATE_VIEW_KEYS, Recipient
from streams.stages.route.render import Rendered, RenderFailure, render, render_prepared, render_shared
from streams.stages.route.split import (
    Plans,
    PreparedParts,
    plan_template,
    prepare_template,
    shared_content,
)
from streams.stages.route.timing import is_expired, is_for_later, next_allowed, quiet_until
from streams.stages.status_change import status_record
from streams.stores.batch import MemoryBatch, PipelineBatch, RedisBatch, RoundTrips
from streams.stores.campaigns import CancelStore, MemoryCampaignRows, PostgresCampaignRows
from streams.stores.cancellations import CancellationView, MemoryCancellationRows, PostgresCancellationRows
from streams.stores.dedup import Claim, DedupStore, MemoryDedupStore, RedisDedupStore
from streams.stores.digests import DigestStore, MemoryDigestStore, PostgresDigestStore
from streams.stores.ratelimits import (
    MemoryRateLimitStore,
    RateLimitStore,
    RedisRateLimitStore,
    Remembered,
)
from streams.stores.recipients import (
    MemoryRecipientStore,
    RecipientStore,
    RedisRecipientStore,
)
from streams.stores.scheduled_rows import (
    Kind,
    MemoryScheduledRows,
    PostgresScheduledRows,
    ScheduledRow,
    ScheduledRows,
    row_headers,
)
from streams.stores.statuses import MemoryStatusStore, PostgresStatusStore, StatusStore
from streams.stores.templates import (
    MemoryTemplateRows,
    PostgresTemplateRows,
    TemplateRows,
    TemplateStore,
)
from streams.templates import CompiledTemplate, TemplateSource

log = logging.getLogger("herald.route")


@dataclass
class RouteStores:
    """What the route handler reads and writes, and how it opens a Redis batch they all queue onto."""

    dedup: DedupStore
    recipients: RecipientStore
    limits: RateLimitStore
    template_rows: TemplateRows
    scheduled: ScheduledRows
    batch: Callable[[], RedisBatch]
    trips: RoundTrips | None = None  # the twins' count of round trips (None for the real stores)
    cancels: CancelStore | None = None  # canceled campaigns (None: not looked at)
    cancellations: CancellationView | None = None  # canceled keys and notifications (None: not looked at)
    statuses: StatusStore | None = None  # what a fallback's check reads (None: every fallback goes)
    digests: DigestStore | None = None  # digest windows (None: a digest route's events go out one by one)

    @classmethod
    def real(cls, ctx: Context) -> RouteStores:
        s, redis, db = ctx.settings, ctx.redis, ctx.db
        return cls(RedisDedupStore(redis, db, s), RedisRecipientStore(redis, db, s), RedisRateLimitStore(s),
                   PostgresTemplateRows(db), PostgresScheduledRows(db), lambda: PipelineBatch(redis),
                   cancels=CancelStore(PostgresCampaignRows(db), s.campaign.cancel_cache_seconds),
                   cancellations=CancellationView(PostgresCancellationRows(db), s.campaign.cancel_cache_seconds,
                                                 s.retention.cancellations_days),
                   statuses=PostgresStatusStore(db), digests=PostgresDigestStore(db))

    @classmethod
    def memory(cls, users: Iterable[Recipient] = (), templates: Iterable[TemplateSource] = ()) -> RouteStores:
        trips = RoundTrips()
        return cls(MemoryDedupStore(trips), MemoryRecipientStore(users, trips), MemoryRateLimitStore(),
                   MemoryTemplateRows(templates, trips), MemoryScheduledRows(trips), lambda: MemoryBatch(trips), trips,
                   CancelStore(MemoryCampaignRows(trips), 0.0), CancellationView(MemoryCancellationRows(), 0.0),
                   MemoryStatusStore(), MemoryDigestStore(trips))


@dataclass(slots=True)
class Candidate:
    """One (event, channel) of a live record."""

    rec: InRecord
    intent: Intent
    claim: Claim
    channel: Channel   # the claim's: read a few times per recipient, a field rather than a property
    state: ClaimState = "new"
    mine: bool = False  # the authority agrees this record holds the claim
    addresses: list[str] = field(default_factory=list)
    limits: list[Counter] = field(default_factory=list)
    denied_by: str | None = None  # the rate-limit rule that refused it


def remembered(c: Candidate) -> Remembered:
    """Where the rate-limit decision of a candidate is kept: a campaign chunk's recipients share their record's key
    (a retry of the record reads the same places), any other (event, channel) has its own."""
    if (position := c.intent.chunk_position) is not None:
        return Remembered(c.claim.origin, c.channel, position, chunk=True)
    return Remembered(c.intent.event_id, c.channel)


@dataclass
class BatchResult:
    codec: Codec
    status_topic: str
    out: list[OutRecord] = field(default_factory=list)
    scheduled: list[ScheduledRow] = field(default_factory=list)
    outcomes: dict[tuple[str, str], int] = field(default_factory=dict)
    # deliver topic → its deliveries, each with the record it came from and its size estimate
    bulk: dict[str, list[tuple[Delivery, InRecord, int]]] = field(default_factory=dict)
    # campaign templates pre-split for the variables a chunk's recipients share (keyed by the variables' identity:
    # the intents hold them through the batch)
    prepared: dict[tuple[TemplateSource, int], PreparedParts | None] = field(default_factory=dict)
    # what an email chunk carries once of each of those (keyed by the PreparedParts' identity, kept alive above)
    shared: dict[int, SharedContent | None] = field(default_factory=dict)
    # a campaign's template and its pre-split parts per (template, channel, locale, variables' identity): a chunk's
    # recipients share them, so they are looked up once per batch, not per recipient
    picked: dict[tuple[str, Channel, str, int], tuple[CompiledTemplate | None, PreparedParts | None]] = field(
        default_factory=dict)

    def count(self, outcome: str, reason: str = "", n: int = 1) -> None:
        self.outcomes[(outcome, reason)] = self.outcomes.get((outcome, reason), 0) + n

    def status(self, rec: InRecord, intent: Intent, status: Status, channel: Channel | None, reason: str | None,
               delivery_id: str | None = None) -> None:
        self.out.append(status_record(
            self.codec, self.status_topic, notification_id=intent.event_id, event_id=intent.event_id,
            user_id=intent.user_id, status=status, event_type=intent.event_type, channel=channel, reason=reason,
            delivery_id=delivery_id, template=intent.template, category=intent.category, campaign_id=intent.campaign_id,
            trace_id=rec.trace_id,
        ))
        self.count(status, reason or "")


class RouteHandler:
    stage = "route"

    def __init__(self, ctx: Context, cfg: RouteConfig, templates: TemplateStore, name: str = "route",
                 stores: RouteStores | None = None) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.templates = templates
        self.name = name
        self.stores = stores or RouteStores.real(ctx)
        settings = ctx.settings
        self.bulk_topic = settings.topic("bulk")
        self.status_topic = settings.topic("status")
        self.dlq_topic = settings.topic("dlq")
        self.max_event_bytes = settings.max_event_bytes
        self.chunk_size = settings.deliver.max_chunk
        self._plans: dict[TemplateSource, Plans | None] = {}
        self._topics: dict[tuple[Channel, Lane, bool], str] = {}   # deliver topic per (channel, lane, critical)
        self.waiting = Waiting(cfg.routes, self.stores.statuses, self.stores.digests, self.stores.cancellations)

    # --- the batch ---------------------------------------------------------------

    async def handle(self, batch: list[InRecord]) -> list[OutRecord]:
        codec = self.ctx.codec
        if missing := codec.missing_ids(rec.value for rec in batch):
            # Confluent-framed events whose schema id is new: one registry request per id, off the event loop; an
            # unreachable registry raises RegistryUnavailable (a ConnectionError), so the runner retries the batch
            await asyncio.to_thread(codec.resolve_ids, missing)
        now = now_ms()
        started = time.time_ns()
        res = BatchResult(codec, self.status_topic)
        if self.stores.cancellations is not None:
            await self.stores.cancellations.refresh()
        live = [found for rec in batch for found in self._admit(rec, now, res)]
        live = await self._not_canceled(live, res)
        live = await self.waiting.hold(live, now, res)
        live.sort(key=lambda found: not found[1].critical)   # stable: a password reset's delivery is produced first
        cands: list[Candidate] = []
        last: InRecord | None = None
        origin = ""
        for rec, intent, _ in live:
            if rec is not last:   # a campaign chunk's recipients share their record's origin: worked out once
                last, origin = rec, claim_origin(rec.topic, rec.partition, rec.offset)
            cands.extend(Candidate(rec, intent, Claim(intent.event_id, channel, origin), channel)
                         for channel in intent.channels)
        if cands:
            recipients, loaded = await self._claim_and_load(cands)
            going = [c for c in cands if self._decide(c, recipients.get(c.intent.user_id), now, res)]
            await self._limit(going, list(loaded.values()))
            for c in going:
                if c.denied_by is not None:
                    res.status(c.rec, c.intent, Status.RATE_LIMITED, c.channel, c.denied_by)
            allowed = [c for c in going if c.denied_by is None]
            failed = [(c, failure) for c in allowed if (failure := self._render(c, recipients[c.intent.user_id], now, res))]
            if failed:
                await self._fail_render(failed, res)
        res.out.extend(self._pack(res.bulk))
        await self.stores.scheduled.insert(res.scheduled)
        outcomes = self.ctx.metrics.stage_outcomes
        for (outcome, reason), n in res.outcomes.items():
            outcomes.labels(self.name, outcome, reason).inc(n)
        if self.ctx.tracer is not None:
            ended = time.time_ns()
            for rec in batch:
                record_span(self.ctx.tracer, self.name, rec.trace_id, started, ended, topic=rec.topic,
                            partition=rec.partition, offset=rec.offset, batch_records=len(batch))
        return res.out

    def _admit(self, rec: InRecord, now: int, res: BatchResult) -> list[Admitted]:
        """Steps 1, 2, 4, 5: decode, route, expiry, send_at. Returns what goes on: a campaign chunk's many recipients;
        an interactive record with what its headers say of the waiting features."""
        size = len(rec.value or b"")
        if size > self.max_event_bytes:
            self._dead(rec, res, DeadLetter(
                "decode", "too_large", f"{size:,}-byte event over the {self.max_event_bytes:,}-byte limit "
                "(HERALD_MAX_EVENT_BYTES)"))
            return []
        try:
            decoded = self.ctx.codec.decode(rec.value)
        except DecodeError as exc:
            self._dead(rec, res, DeadLetter("decode", exc.reason, str(exc)))
            return []
        back: Returned | None = None
        try:
            if decoded.name == "CampaignChunk":
                intents, problems = chunk_intents(decoded, self.cfg)
                if problems:   # the rest of the chunk goes on; a replay of this record finds them de-duplicated
                    self._dead(rec, res, DeadLetter("route", "bad_event", f"{len(problems)} recipient(s) not routed: "
                                                    + "; ".join(problems[:5])))
            else:
                intent = intent_for(decoded, self.cfg, bulk=rec.topic == self.bulk_topic)
                # a fallback's check or a digest's closing (headers read here only): its own intent from here on
                if intent.lane == Lane.INTERACTIVE and (back := returned(rec)) is not None:
                    intent = back.intent(intent, now)
                intents = [intent]
        except RouteError as exc:
            self._dead(rec, res, DeadLetter("route", exc.reason, str(exc)))
            return []
        return [(rec, intent, back) for intent in intents if self._due(rec, intent, now, res)]

    def _due(self, rec: InRecord, intent: Intent, now: int, res: BatchResult) -> bool:
        view = self.stores.cancellations
        if view is not None and not view.empty and (
                why := view.reason(intent.event_id, intent.cancellation_key, intent.occurred_ms)):
            for channel in intent.channels:
                res.status(rec, intent, Status.CANCELED, channel, why)
            return False
        if is_expired(intent, now):
            for channel in intent.channels:
                res.status(rec, intent, Status.EXPIRED, channel, "ttl")
            return False
        if is_for_later(intent, now):
            assert intent.send_at_ms is not None
            res.scheduled.append(ScheduledRow(
                intent.send_at_ms, rec.topic, rec.key, rec.value or b"", row_headers(rec), "send_at",
                intent.event_id, f"send_at:{intent.event_id}", intent.cancellation_key,
            ))
            res.status(rec, intent, Status.SCHEDULED, None, "send_at")
            return False
        return True

    async def _not_canceled(self, live: list[Admitted], res: BatchResult) -> list[Admitted]:
        """A canceled campaign's recipients end 'canceled' here, before any claim or render (one look per batch)."""
        cancels = self.stores.cancels
        if cancels is None or not (stopped := await cancels.canceled({i.campaign_id for _, i, _ in live})):
            return live
        for rec, intent, _ in live:
            if intent.campaign_id in stopped:
                for channel in intent.channels:
                    res.status(rec, intent, Status.CANCELED, channel, "campaign canceled")
        return [item for item in live if item[1].campaign_id not in stopped]

    async def _claim_and_load(self, cands: list[Candidate]) -> tuple[dict[str, Recipient], dict[str, Recipient]]:
        """Claims and recipients: (every known recipient, the ones just read from PostgreSQL)."""
        stores = self.stores
        users = list(dict.fromkeys(c.intent.user_id for c in cands))
        if all(c.intent.lane == Lane.BULK for c in cands):
            # a campaign meets each user once: the recipient cache would only be filled, never read, and the
            # de-duplication fast path would only add a Redis write per claim before the authority's own
            loaded, mine, _ = await asyncio.gather(
                stores.recipients.load(users, devices=any(c.channel == Channel.PUSH for c in cands)),
                stores.dedup.authorize([c.claim for c in cands]),
                self.templates.refresh(stores.template_rows, {c.intent.template for c in cands}),
            )
            for c in cands:
                c.mine = c.claim.key in mine
            return dict(loaded), {}

        # Redis round trip 1: cached recipients + the de-duplication fast path
        first = stores.batch()
        cached = stores.recipients.queue_cached(first, users)
        states = stores.dedup.queue_claims(first, [c.claim for c in cands])
        await first.execute()
        for c, state in zip(cands, states.value, strict=True):
            c.state = state
        recipients = dict(cached.value)
        claiming = [c for c in cands if c.state != "duplicate"]

        # PostgreSQL, concurrently: cache misses, the de-duplication authority, stale templates
        loaded, mine, _ = await asyncio.gather(
            stores.recipients.load([u for u in users if u not in recipients]),
            stores.dedup.authorize([c.claim for c in claiming]),
            self.templates.refresh(stores.template_rows, {c.intent.template for c in claiming}),
        )
        recipients.update(loaded)
        for c in claiming:
            c.mine = c.claim.key in mine
        # a stored user's profile wins over the addresses a request brought
        for c in cands:
            if c.intent.inline is not None and c.intent.user_id not in recipients:
                recipients[c.intent.user_id] = c.intent.inline
        return recipients, loaded

    def _decide(self, c: Candidate, recipient: Recipient | None, now: int, res: BatchResult) -> bool:
        """Steps 6, 7 and the counters of step 9: whether this (event, channel) goes on to the limits."""
        if c.state == "duplicate" or not c.mine:
            res.count("duplicate")
            return False
        decision = channel_decision(c.intent, c.channel, recipient)
        if isinstance(decision, tuple):
            status, reason = decision
            res.status(c.rec, c.intent, status, c.channel, reason)
            return False
        c.addresses = decision
        c.limits = counters(self.cfg.rate_limits, self.stores.limits.prefix, user=c.intent.user_id, channel=c.channel,
                            category=c.intent.category, event_type=c.intent.event_type, now_ms=now,
                            critical=c.intent.critical)
        return True

    async def _limit(self, going: list[Candidate], loaded: list[Recipient]) -> None:
        """Redis round trip 2: fill the recipient cache + step 9, every rate limit of the batch at once."""
        second = self.stores.batch()
        self.stores.recipients.queue_fill(second, loaded)
        limited = [c for c in going if c.limits]
        verdicts = self.stores.limits.queue_checks(second, [c.limits for c in limited], [remembered(c) for c in limited])
        await second.execute()
        for c, rule in zip(limited, verdicts.value, strict=True):
            c.denied_by = rule

    # --- steps 8, 10, 11 ------------------------------------------------------------

    def _render(self, c: Candidate, recipient: Recipient, now: int, res: BatchResult) -> RenderFailure | None:
        """Render and write one (event, channel) within its limits; a failure is returned, not written."""
        intent, settings = c.intent, self.ctx.settings
        if intent.lane == Lane.BULK:
            memo = (intent.template, c.channel, recipient.locale, id(intent.variables))
            if (picked := res.picked.get(memo)) is None:
                found = self.templates.pick(intent.template, c.channel, recipient.locale)
                picked = res.picked[memo] = (found, self._prepared(res, found, intent) if found is not None else None)
            tmpl, prepared = picked
        else:
            tmpl, prepared = self.templates.pick(intent.template, c.channel, recipient.locale), None
        content: SharedContent | None = None
        values: tuple[str, ...] = ()
        rendered: Rendered | RenderFailure
        if prepared is not None:
            assert tmpl is not None
            view, ids = recipient.template_view(), {"event_id": intent.event_id, "notification_id": intent.event_id}
            if c.channel == Channel.EMAIL and (content := self._shared(res, prepared)) is not None:
                # its chunk will carry the parts once: they are not joined per recipient (see chunk_record)
                shared = render_shared(tmpl, prepared, content, view, ids)
                if isinstance(shared, RenderFailure):
                    return shared
                rendered, values = shared
            else:
                rendered = render_prepared(tmpl, c.channel, prepared, view, ids, push_data(intent))
        else:
            rendered = render(tmpl, c.channel, template_context(intent, recipient), push_data(intent))
        if isinstance(rendered, RenderFailure):
            return rendered
        assert tmpl is not None
        # a critical category's deliveries (interactive lane) travel a deliver topic of their own, never behind orders
        where = (c.channel, intent.lane, intent.critical)
        if (topic := self._topics.get(where)) is None:
            topic = self._topics[where] = deliver_topic(settings, c.channel, intent.lane, critical=intent.critical)
        made = [delivery_record(intent, c.channel, address, tmpl, rendered) for address in c.addresses]
        if content is not None:
            for d in made:
                d.shared, d.slot_values = content, values
        defer_until = None
        if c.channel in self.cfg.quiet_hours_channels and not intent.critical:
            defer_until = quiet_until(now, recipient.time_zone, recipient.quiet_start, recipient.quiet_end)
        why: Kind = "quiet_hours"
        if intent.window is not None:   # a campaign's send window: waits for a time it and the quiet hours allow
            quiet = c.channel in self.cfg.quiet_hours_channels and not intent.critical
            allowed = next_allowed(now, recipient.time_zone, intent.window, recipient.quiet_start if quiet else None,
                                   recipient.quiet_end if quiet else None)
            defer_until, why = allowed if allowed is not None else (None, why)
        limit = settings.max_record_bytes
        # a DeliveryChunk carries no cancellation_key: a keyed delivery travels as a Delivery of its own
        if intent.lane == Lane.BULK and defer_until is None and intent.cancellation_key is None:
            # packed into DeliveryChunk records at the end of the batch, encoded there in one pass
            # with shared content a delivery adds its values to a chunk (the pieces count once per chunk), but the
            # whole message, which a retry or a dead letter carries on its own, must fit a record too
            sizes = [approx_size(d) for d in made]
            whole = max(sizes) + (content.size() if content is not None else 0)
            if whole > limit - CHUNK_FRAME_BYTES:
                return RenderFailure("too_large", f"the rendered {c.channel} is about {whole:,} bytes, over the "
                                                  f"{limit:,}-byte record limit (HERALD_MAX_RECORD_BYTES)")
            res.bulk.setdefault(topic, []).extend((d, c.rec, size) for d, size in zip(made, sizes, strict=True))
            for d in made:
                if settings.queued_status_bulk:
                    res.status(c.rec, intent, Status.QUEUED, c.channel, None, d.delivery_id)
                else:  # a campaign's notification row appears with its "sent": half the status traffic
                    res.count(Status.QUEUED, "")
            return None
        for d in made:   # a Delivery of its own is whole
            unshare(d)
        key, trace = intent.user_id.encode(), c.rec.trace_id
        headers = set_header([], TRACE, trace)
        encoded = [(d, self.ctx.codec.encode("Delivery", d.to_avro())) for d in made]
        if (largest := max((record_size(key, value, headers) for _, value in encoded), default=0)) > limit:
            # bad input, not an outage: only this record's channel is dead-lettered, the batch goes on
            return RenderFailure("too_large", f"the rendered {c.channel} is {largest:,} bytes, over the "
                                              f"{limit:,}-byte record limit (HERALD_MAX_RECORD_BYTES)")
        for d, value in encoded:
            if defer_until is not None:
                res.scheduled.append(ScheduledRow(defer_until, topic, key, value, {TRACE: trace}, why,
                                                  intent.event_id, f"{why}:{d.delivery_id}", intent.cancellation_key))
                res.status(c.rec, intent, Status.DEFERRED, c.channel, why, d.delivery_id)
            else:
                res.out.append(OutRecord(topic, key, value, headers))
                if intent.lane != Lane.BULK or settings.queued_status_bulk:
                    res.status(c.rec, intent, Status.QUEUED, c.channel, None, d.delivery_id)
                else:  # a campaign's notification row appears with its "sent": half the status traffic
                    res.count(Status.QUEUED, "")
        return None

    def _prepared(self, res: BatchResult, tmpl: CompiledTemplate, intent: Intent) -> PreparedParts | None:
        """The template rendered once for the campaign variables these recipients share (a chunk's recipients hold
        one variables object), or None when it cannot be split: Jinja then renders each recipient."""
        if tmpl.source not in self._plans:
            if len(self._plans) > 1000:
                self._plans.clear()
            self._plans[tmpl.source] = plan_template(tmpl, TEMPLATE_VIEW_KEYS)
        plans = self._plans[tmpl.source]
        if plans is None:
            return None
        key = (tmpl.source, id(intent.variables))
        if key not in res.prepared:
            res.prepared[key] = prepare_template(plans, {**intent.variables, "event_type": intent.event_type})
        return res.prepared[key]

    def _shared(self, res: BatchResult, prepared: PreparedParts) -> SharedContent | None:
        key = id(prepared)
        if key not in res.shared:
            res.shared[key] = shared_content(prepared, self.ctx.settings.bulk_share_min_bytes)
        return res.shared[key]

    async def _fail_render(self, failed: list[tuple[Candidate, RenderFailure]], res: BatchResult) -> None:
        """Dead-letter each record once (naming every failed channel) and release those channels' claims."""
        by_rec: dict[int, list[tuple[Candidate, RenderFailure]]] = {}
        for c, failure in failed:
            by_rec.setdefault(id(c.rec), []).append((c, failure))
        for items in by_rec.values():
            first, first_failure = items[0]
            text = "; ".join(f"{c.channel}: {failure.message}" for c, failure in items[:5])
            if len(items) > 5:   # a campaign chunk: one record for many recipients
                text = f"{len(items)} failed, the first: {text}"
            self._dead(first.rec, res, DeadLetter("render", first_failure.reason, text))
        await self.stores.dedup.release([c.claim for c, _ in failed])

    # --- outputs ---------------------------------------------------------------------

    def _pack(self, bulk: dict[str, list[tuple[Delivery, InRecord, int]]]) -> list[OutRecord]:
        """The bulk lane's deliveries as DeliveryChunk records: those that share their campaign fields, up to a
        provider request each and within the record limit; keyed and traced by the first input record of each."""
        out: list[OutRecord] = []
        limit = self.ctx.settings.max_record_bytes - CHUNK_FRAME_BYTES
        encode = self.ctx.codec.encode
        for topic, items in bulk.items():
            by_key: dict[tuple, list[tuple[Delivery, InRecord, int]]] = {}
            for item in items:   # the same content object: rendered from the same template and variables
                by_key.setdefault((*chunk_key(item[0]), id(item[0].shared)), []).append(item)
            # a content only one delivery has (a recipient with variables of its own) saves nothing: that delivery
            # travels whole, in a chunk with the others of its kind rather than in a chunk of its own
            for k in [k for k, same in by_key.items() if len(same) == 1 and same[0][0].shared is not None]:
                d, rec, _ = by_key.pop(k)[0]
                unshare(d)
                by_key.setdefault((*k[:-1], id(None)), []).append((d, rec, approx_size(d)))
            for same in by_key.values():
                content = same[0][0].shared
                room = limit - (content.size() if content is not None else 0)
                for group in pack_groups([size for _, _, size in same], self.chunk_size, room):
                    d0, first, _ = same[group.start]
                    name = f"{first.topic}/{first.partition}/{first.offset}/{d0.delivery_id}"
                    value = encode("DeliveryChunk", chunk_record(name, [d for d, _, _ in same[group.start:group.end]]))
                    out.append(OutRecord(topic, first.key or name.encode(), value, set_header([], TRACE, first.trace_id)))
        return out

    def _dead(self, rec: InRecord, res: BatchResult, why: DeadLetter) -> None:
        res.out.append(dead_letter(rec, why, self.dlq_topic, self.ctx.settings.max_record_bytes))
        self.ctx.metrics.dead_letters.labels(why.stage, why.error_class).inc()
        res.count(Status.DEAD_LETTERED, why.error_class)


def specs(settings: Settings) -> list[AgentSpec]:
    from infra.schema_registry import catalog_for

    catalog = catalog_for(settings)  # the packaged catalog and HERALD_SCHEMAS_DIR
    known = {name: {f["name"] for f in catalog.latest(name).raw["fields"]} for name in catalog.versions}
    cfg = load_routes(settings.routes_file, known)  # a bad routes file stops the worker at start

    def build_for(name: str):
        async def build(ctx: Context) -> RouteHandler:
            return RouteHandler(ctx, cfg, TemplateStore(cfg.template_refresh_seconds), name)
        return build

    return [
        AgentSpec("route", [events_topic(settings)], build_for("route"), ready=True),
        # the critical events (a password reset) have a topic and a consumer of their own: no backlog of orders ahead
        AgentSpec("route-critical", [events_topic(settings, critical=True)], build_for("route-critical"), ready=True),
        AgentSpec("route-bulk", [settings.topic("bulk")], build_for("route-bulk"), batch_bytes=settings.bulk_batch_bytes),
    ]
