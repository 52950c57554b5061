"""The deliver handler's choreography over the in-memory twins of its stores and an in-memory sink: no network.

The same scenarios run over the real stores (PostgreSQL ledger and devices, Redis circuit) in
tests/integration/test_deliver_stores.py, which imports them and overrides the ``deliver_stores``
fixture: a twin that drifts from its store fails there.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest

from infra.kafka.dead_letters import ERROR_CLASS
from infra.kafka.records import ATTEMPT, TRACE, InRecord, OutRecord
from infra.settings import DeliverTuning, Settings
from infra.topics import deliver_topic
from schemas.codec import Codec
from schemas.records import Delivery, chunk_record
from schemas.vocabulary import Channel, Lane, LedgerStatus, Status
from sinks.errors import InvalidToken, Permanent, RateLimited, Retryable
from sinks.memory import MemorySink
from streams.handlers.deliver import DeliverHandler, DeliverStores, LaneGate
from streams.metrics import Metrics
from streams.runtime.context import Context
from streams.stages.deliver import Breaker
from streams.stages.retry import DUE_HEADER
from streams.stages.status_fold import Fold
from streams.stores.circuit import Change, MemoryCircuit
from streams.stores.ledger import MemoryLedger
from streams.stores.statuses import MemoryStatusStore
from tests.support.sandbox import delivery


class DeliverEnv:
    """What a scenario needs from its stores; ``MemoryDeliverEnv`` here, ``RealDeliverEnv`` in the integration file."""

    settings: Settings
    codec: Codec

    def run(self, scenario: Callable[[DeliverEnv], Awaitable[None]]) -> None:
        raise NotImplementedError

    def stores(self, tuning: DeliverTuning) -> DeliverStores:
        raise NotImplementedError

    async def ledger(self, delivery_id: str) -> tuple[LedgerStatus, int] | None:
        """(status, attempts) of a delivery's ledger row, as ``delivery_state`` says it (a bulk send is 'sent' by its
        history row)."""
        raise NotImplementedError

    async def add_device(self, token: str) -> None:
        raise NotImplementedError

    async def device(self, token: str) -> tuple[bool, int, str | None]:
        """(active, temp_failures, deactivated_reason)."""
        raise NotImplementedError

    async def recipient_dropped(self) -> bool:
        """The devices' owner's cached recipient was dropped (and the fill guard set)."""
        raise NotImplementedError

    def handler(self, sink: MemorySink, lane: Lane = Lane.INTERACTIVE, **tuning: Any) -> DeliverHandler:
        tune = DeliverTuning(**tuning)
        # the handler reaches Redis and PostgreSQL through its stores only: the context needs neither
        ctx = Context(settings=self.settings, codec=self.codec, output=None, redis=None, db=None,  # type: ignore[arg-type]
                      metrics=Metrics())
        return DeliverHandler(ctx, sink.channel, lane, sink, LaneGate(), tune, stores=self.stores(tune))


class MemoryDeliverEnv(DeliverEnv):
    def __init__(self) -> None:
        self.settings = Settings(metrics_port=0)
        self.codec = Codec()
        self._stores: DeliverStores | None = None
        self.dropped: list[str] = []

    def run(self, scenario: Callable[[DeliverEnv], Awaitable[None]]) -> None:
        asyncio.run(scenario(self))

    def stores(self, tuning: DeliverTuning) -> DeliverStores:
        stores = self._shared()
        stores.ledger.lease = tuning.claim_lease  # type: ignore[attr-defined]
        stores.devices.limit = tuning.device_failure_limit  # type: ignore[attr-defined]
        return stores

    def _shared(self) -> DeliverStores:
        if self._stores is None:  # one ledger, circuit and device table per test, like the real ones
            self._stores = DeliverStores.memory(DeliverTuning())
            self._stores.devices.on_deactivated = self._dropped   # type: ignore[attr-defined]
        return self._stores

    async def _dropped(self, user_ids: list[str]) -> None:
        self.dropped += user_ids

    async def recipient_dropped(self) -> bool:
        return "u-1" in self.dropped

    async def ledger(self, delivery_id: str) -> tuple[LedgerStatus, int] | None:
        ledger = self._shared().ledger
        row = ledger.rows.get(delivery_id)  # type: ignore[attr-defined]
        return (ledger.status(delivery_id), row.attempts) if row else None  # type: ignore[attr-defined]

    async def add_device(self, token: str) -> None:
        self._shared().devices.add(token)  # type: ignore[attr-defined]

    async def device(self, token: str) -> tuple[bool, int, str | None]:
        found = self._shared().devices.tokens[token]  # type: ignore[attr-defined]
        return found.active, found.temp_failures, found.deactivated_reason


@pytest.fixture(params=["memory"])
def deliver_stores(request) -> DeliverEnv:
    return MemoryDeliverEnv()


def scenario(fn: Callable[[DeliverEnv], Awaitable[None]]) -> Callable[[DeliverEnv], None]:
    """A test that runs ``fn`` inside its environment's event loop."""
    def test(deliver_stores: DeliverEnv) -> None:
        deliver_stores.run(fn)
    test.__name__, test.__doc__ = fn.__name__, fn.__doc__
    return test


# --- records in, records out -------------------------------------------------------------

_offsets = iter(range(10**9))


def typed(channel: Channel = Channel.EMAIL, **over: Any) -> Delivery:
    return Delivery.from_avro(delivery(channel, **over))


def record(env: DeliverEnv, d: Delivery, topic: str | None = None) -> InRecord:
    return InRecord(topic or deliver_topic(env.settings, d.channel), 0, next(_offsets), d.user_id.encode(),
                    env.codec.encode("Delivery", d.to_avro()), [(TRACE, d.event_id.encode())])


def again(rec: OutRecord, origin: str) -> InRecord:
    """A record the handler wrote (a retry), read back as the retry tier hands it to the deliver topic."""
    return InRecord(origin, 0, next(_offsets), rec.key, rec.value, rec.headers)


def statuses(env: DeliverEnv, out: list[OutRecord]) -> list[tuple[str, str, str | None]]:
    """(delivery_id, status, provider_message_id) of the status changes."""
    found = []
    for o in out:
        if o.topic == env.settings.topic("status"):
            s = env.codec.decode(o.value).record
            found.append((s["delivery_id"], s["status"], s["provider_message_id"]))
    return found


def retries(env: DeliverEnv, out: list[OutRecord]) -> list[OutRecord]:
    return [o for o in out if o.topic in env.settings.retry_topics]


def dead(env: DeliverEnv, out: list[OutRecord]) -> list[OutRecord]:
    return [o for o in out if o.topic == env.settings.topic("dlq")]


def header(rec: OutRecord, name: str) -> str | None:
    return next((v.decode() for k, v in rec.headers if k == name), None)


def now_ms() -> int:
    return int(time.time() * 1000)


# --- the scenarios ---------------------------------------------------------------------------

@scenario
async def test_a_delivery_is_sent_once_and_marked(env: DeliverEnv) -> None:
    sink = MemorySink()
    d = typed()
    out = await env.handler(sink).handle([record(env, d)])
    assert [[x.delivery_id for x in call] for call in sink.calls] == [[d.delivery_id]]
    assert isinstance(sink.calls[0][0], Delivery) and sink.calls[0][0].address == d.address
    [(did, status, pmid)] = statuses(env, out)
    assert (did, status) == (d.delivery_id, Status.SENT) and pmid
    assert await env.ledger(d.delivery_id) == (LedgerStatus.SENT, 1)
    assert retries(env, out) == [] and dead(env, out) == []


@scenario
async def test_a_copy_in_the_same_batch_is_sent_once(env: DeliverEnv) -> None:
    sink = MemorySink()
    d = typed()
    out = await env.handler(sink).handle([record(env, d), record(env, d)])
    assert sink.sent_to(d.address) == 1
    assert [s for _, s, _ in statuses(env, out)] == [Status.SENT]


@scenario
async def test_a_replay_of_a_sent_delivery_says_sent_again_without_a_second_call(env: DeliverEnv) -> None:
    sink = MemorySink()
    handler = env.handler(sink)
    d = typed()
    [(_, _, pmid)] = statuses(env, await handler.handle([record(env, d)]))
    out = await handler.handle([record(env, d)])
    assert len(sink.calls) == 1
    assert statuses(env, out) == [(d.delivery_id, Status.SENT, pmid)]
    assert await env.ledger(d.delivery_id) == (LedgerStatus.SENT, 1)


@scenario
async def test_a_claim_younger_than_the_lease_is_handed_back_without_a_call(env: DeliverEnv) -> None:
    sink = MemorySink()
    handler = env.handler(sink)
    d = typed()
    await handler.stores.ledger.claim([d])   # a live call of another worker
    rec = record(env, d)
    before = now_ms()
    out = await handler.handle([rec])
    assert sink.calls == [] and statuses(env, out) == []
    [back] = retries(env, out)
    assert back.topic == env.settings.retry_topics[0] and back.value == rec.value   # not re-encoded: no attempt spent
    assert int(header(back, DUE_HEADER)) >= before + 120_000
    assert await env.ledger(d.delivery_id) == (LedgerStatus.CLAIMED, 1)


@scenario
async def test_a_security_notification_goes_in_the_first_chunk_of_its_batch(env: DeliverEnv) -> None:
    sink = MemorySink(max_batch=2)
    orders = [typed(category="transactional", event_type="OrderPlaced") for _ in range(5)]
    reset = typed(category="security")
    out = await env.handler(sink).handle([record(env, d) for d in [*orders, reset]])
    assert [d.delivery_id for d in sink.calls[0]] == [reset.delivery_id, orders[0].delivery_id]
    assert [d.delivery_id for d in sink.given[1:]] == [d.delivery_id for d in orders]   # the rest keep their order
    assert len(statuses(env, out)) == 6


@scenario
async def test_retryable_goes_to_the_first_tier_with_attempt_plus_one_and_is_sent_from_there(env: DeliverEnv) -> None:
    sink = MemorySink()
    handler = env.handler(sink)
    d = typed()
    sink.script(d.address, Retryable("503 from the provider"))
    rec = record(env, d)
    out = await handler.handle([rec])
    [retry] = retries(env, out)
    assert retry.topic == env.settings.retry_topics[0] and header(retry, ATTEMPT) == "1"
    again_d = Delivery.from_avro(env.codec.decode(retry.value).record)
    assert (again_d.attempt, again_d.last_error) == (1, "503 from the provider") and again_d.first_failure_at
    # the failed attempt is in the notification's history: its error and the tier it waits in
    assert statuses(env, out) == [(d.delivery_id, Status.RETRYING, None)]
    [why] = [env.codec.decode(o.value).record["reason"] for o in out if o.topic == env.settings.topic("status")]
    assert why.startswith("attempt 1 failed: 503 from the provider; retry tier 1 (") and env.settings.retry_topics[0] in why
    assert await env.ledger(d.delivery_id) == (LedgerStatus.FAILED, 1)
    out = await handler.handle([again(retry, rec.topic)])
    assert [s for _, s, _ in statuses(env, out)] == [Status.SENT]
    assert await env.ledger(d.delivery_id) == (LedgerStatus.SENT, 2)
    assert sink.sent_to(d.address) == 2


@scenario
async def test_a_short_429_is_waited_out_without_spending_an_attempt(env: DeliverEnv) -> None:
    sink = MemorySink()
    ds = [typed(), typed()]
    sink.script(ds[0].address, RateLimited("429", 0.05))
    sink.script(ds[1].address, RateLimited("429", 0.05))
    out = await env.handler(sink).handle([record(env, d) for d in ds])
    assert len(sink.calls) == 2 and [len(c) for c in sink.calls] == [2, 2]   # the same chunk again
    assert sorted(s for _, s, _ in statuses(env, out)) == [Status.SENT, Status.SENT] and retries(env, out) == []
    for d in ds:
        assert await env.ledger(d.delivery_id) == (LedgerStatus.SENT, 1)


@scenario
async def test_a_429_past_the_wait_budget_is_handed_back_and_pauses_the_provider(env: DeliverEnv) -> None:
    sink = MemorySink()
    handler = env.handler(sink)
    d, later = typed(), typed()
    sink.script(d.address, RateLimited("429", 3600))
    rec = record(env, d)
    out = await handler.handle([rec])
    [back] = retries(env, out)
    assert back.value == rec.value and header(back, ATTEMPT) == "0"   # no attempt spent
    assert await env.ledger(d.delivery_id) == (LedgerStatus.FAILED, 1)
    assert (await handler.stores.circuit.load()).paused_until_ms > now_ms() + 3500_000
    # the pause is shared: the next batch is handed back without a call
    out = await handler.handle([record(env, later)])
    assert len(sink.calls) == 1 and len(retries(env, out)) == 1


@scenario
async def test_permanent_is_a_dead_letter_and_failed(env: DeliverEnv) -> None:
    sink = MemorySink()
    d = typed()
    sink.script(d.address, Permanent("550 no such mailbox"))
    out = await env.handler(sink).handle([record(env, d)])
    [letter] = dead(env, out)
    assert header(letter, ERROR_CLASS) == "permanent"
    assert [(s, pmid) for _, s, pmid in statuses(env, out)] == [(Status.FAILED, None)]
    assert retries(env, out) == [] and await env.ledger(d.delivery_id) == (LedgerStatus.FAILED, 1)


@scenario
async def test_a_bulk_chunk_goes_in_one_call_and_the_handler_writes_its_statuses(env: DeliverEnv) -> None:
    sink = MemorySink()
    occurred, campaign = now_ms(), f"c-{uuid.uuid4().hex[:8]}"
    ds = [typed(lane="bulk", category="marketing", campaign_id=campaign, occurred_at=occurred, event_type="CampaignMessage",
                template="weekly_digest") for _ in range(3)]
    sink.script(ds[1].address, Permanent("550 no such mailbox"))
    topic = deliver_topic(env.settings, Channel.EMAIL, "bulk")
    chunk = InRecord(topic, 0, next(_offsets), b"chunk", env.codec.encode("DeliveryChunk", chunk_record("c/0", ds)),
                     [(TRACE, b"trace-chunk")])
    handler = env.handler(sink, Lane.BULK)
    out = await handler.handle([chunk])
    assert [len(call) for call in sink.calls] == [3]
    # the bulk lane writes its statuses itself: nothing for the status agent
    assert statuses(env, out) == []
    assert handler.stores.statuses is not None
    for d, status in zip(ds, (Status.SENT, Status.FAILED, Status.SENT), strict=True):
        assert await handler.stores.statuses.history_of(d.notification_id) == [status]
        assert await handler.stores.statuses.status_of(d.notification_id) == status
        assert await handler.stores.statuses.trace_of(d.notification_id) == "trace-chunk"  # stored with the status
    # the failed one is dead-lettered on its own, as the Delivery it was, never as the whole chunk
    [letter] = dead(env, out)
    alone = Delivery.from_avro(env.codec.decode(letter.value).record)
    assert alone.delivery_id == ds[1].delivery_id and alone.lane == Lane.BULK and alone.campaign_id == campaign
    assert letter.key == ds[1].user_id.encode() and header(letter, TRACE) == "trace-chunk"
    assert await env.ledger(ds[0].delivery_id) == (LedgerStatus.SENT, 1)
    # the chunk read again (a crash before the commit): the sent ones are acknowledged from the ledger without a
    # call; only the one that failed is tried again (a failure is nobody's send)
    await handler.handle([chunk])
    assert [[d.delivery_id for d in call] for call in sink.calls][1:] == [[ds[1].delivery_id]]
    assert await handler.stores.statuses.history_of(ds[0].notification_id) == [Status.SENT]


@scenario
async def test_a_bulk_send_is_recorded_by_its_history_row_and_never_sent_again_however_old_its_claim(
        env: DeliverEnv) -> None:
    """The bulk lane leaves its sent rows 'claimed' in the ledger: their sent-once history rows, written right after
    the call, say 'sent'. A chunk read again after the claims' lease (0 here: every claim is stale at once) sends
    only the delivery that failed."""
    sink = MemorySink()
    ds = [typed(lane="bulk", category="marketing", campaign_id=f"c-{uuid.uuid4().hex[:8]}", event_type="CampaignMessage",
                template="weekly_digest") for _ in range(2)]
    sink.script(ds[1].address, Retryable("503 try later"))
    topic = deliver_topic(env.settings, Channel.EMAIL, "bulk")
    chunk = InRecord(topic, 0, next(_offsets), b"chunk", env.codec.encode("DeliveryChunk", chunk_record("c/0", ds)), [])
    handler = env.handler(sink, Lane.BULK, claim_lease=0.0)
    await handler.handle([chunk])
    assert await env.ledger(ds[0].delivery_id) == (LedgerStatus.SENT, 1)
    assert await env.ledger(ds[1].delivery_id) == (LedgerStatus.FAILED, 1)
    await handler.handle([chunk])
    assert [[d.delivery_id for d in call] for call in sink.calls] == [[d.delivery_id for d in ds], [ds[1].delivery_id]]
    assert await env.ledger(ds[0].delivery_id) == (LedgerStatus.SENT, 1)
    assert handler.stores.statuses is not None
    assert await handler.stores.statuses.history_of(ds[0].notification_id) == [Status.SENT]


@scenario
async def test_a_canceled_campaign_is_never_sent_even_when_the_cancel_comes_between_two_calls(env: DeliverEnv) -> None:
    campaign = f"c-{uuid.uuid4().hex[:8]}"
    ds = [typed(lane="bulk", category="marketing", campaign_id=campaign, event_type="CampaignMessage") for _ in range(4)]
    other = typed(lane="bulk", category="marketing", campaign_id="c-other", event_type="CampaignMessage")
    topic = deliver_topic(env.settings, Channel.EMAIL, "bulk")
    handler = env.handler(MemorySink(max_batch=2), Lane.BULK)
    cancels = handler.stores.cancels
    assert cancels is not None and handler.stores.statuses is not None

    class CancelAfterFirstCall(MemorySink):
        async def send_batch(self, deliveries: list[Delivery]) -> list[Any]:
            cancels.rows.cancel(campaign)   # type: ignore[attr-defined] - the twin
            return await super().send_batch(deliveries)

    sink = CancelAfterFirstCall(max_batch=2)
    handler.sink = sink
    chunk = InRecord(topic, 0, next(_offsets), b"chunk", env.codec.encode("DeliveryChunk", chunk_record("c/0", ds)))
    await handler.handle([chunk])
    assert [[d.delivery_id for d in call] for call in sink.calls] == [[ds[0].delivery_id, ds[1].delivery_id]]
    for d, status in zip(ds, (Status.SENT, Status.SENT, Status.CANCELED, Status.CANCELED), strict=True):
        assert await handler.stores.statuses.status_of(d.notification_id) == status
    assert await env.ledger(ds[2].delivery_id) == (LedgerStatus.FAILED, 1)
    # the same deliveries back from a retry tier or the scheduler: canceled before any claim; another campaign goes on
    again_ = [InRecord(topic, 0, next(_offsets), b"k", env.codec.encode("Delivery", d.to_avro())) for d in (ds[3], other)]
    await handler.handle(again_)
    assert [d.delivery_id for d in sink.calls[-1]] == [other.delivery_id] and len(sink.calls) == 2
    assert await handler.stores.statuses.history_of(ds[3].notification_id) == [Status.CANCELED, Status.CANCELED]


@scenario
async def test_an_invalid_token_deactivates_the_device(env: DeliverEnv) -> None:
    sink = MemorySink(Channel.PUSH)
    gone, fine = f"tok-gone-{uuid.uuid4().hex}", f"tok-fine-{uuid.uuid4().hex}"
    for token in (gone, fine):
        await env.add_device(token)
    sink.script(gone, InvalidToken("UNREGISTERED"))
    out = await env.handler(sink).handle([record(env, typed(Channel.PUSH, address=a)) for a in (gone, fine)])
    assert [header(x, ERROR_CLASS) for x in dead(env, out)] == ["invalid_token"]
    assert await env.device(gone) == (False, 0, "unregistered")
    assert await env.device(fine) == (True, 0, None)


@scenario
async def test_a_deactivated_device_drops_its_users_cached_recipient(env: DeliverEnv) -> None:
    """Else the cached recipient (5 minutes) still lists the dead token and the next push goes to it."""
    sink = MemorySink(Channel.PUSH)
    fine = f"tok-fine-{uuid.uuid4().hex}"
    await env.add_device(fine)
    await env.handler(sink).handle([record(env, typed(Channel.PUSH, address=fine))])
    assert not await env.recipient_dropped()   # nothing changed: the cache stays
    gone = f"tok-gone-{uuid.uuid4().hex}"
    await env.add_device(gone)
    sink.script(gone, InvalidToken("UNREGISTERED"))
    await env.handler(sink).handle([record(env, typed(Channel.PUSH, address=gone))])
    assert await env.recipient_dropped()


@scenario
async def test_temporary_failures_in_a_row_deactivate_a_device(env: DeliverEnv) -> None:
    sink = MemorySink(Channel.PUSH, otherwise=Retryable("503"))
    token = f"tok-flaky-{uuid.uuid4().hex}"
    await env.add_device(token)
    handler = env.handler(sink, device_failure_limit=2, breaker_failures=1000)
    await handler.handle([record(env, typed(Channel.PUSH, address=token))])
    assert await env.device(token) == (True, 1, None)
    await handler.handle([record(env, typed(Channel.PUSH, address=token))])
    assert await env.device(token) == (False, 2, "temporary_failures")


@scenario
async def test_the_circuit_opens_after_n_failures_and_an_open_circuit_sends_to_the_ladder_without_calling(
        env: DeliverEnv) -> None:
    sink = MemorySink(otherwise=Retryable("503"))
    handler = env.handler(sink, breaker_failures=3, max_chunk=1)
    ds = [typed() for _ in range(5)]
    out = await handler.handle([record(env, d) for d in ds])
    assert len(sink.calls) == 3
    assert (await handler.stores.circuit.load()).state == "open"
    assert len(retries(env, out)) == 5   # the three that failed and the two never called, each attempt 1
    assert {header(r, ATTEMPT) for r in retries(env, out)} == {"1"}
    for d in ds:
        assert await env.ledger(d.delivery_id) == (LedgerStatus.FAILED, 1)
    out = await handler.handle([record(env, typed())])
    assert len(sink.calls) == 3 and len(retries(env, out)) == 1


@scenario
async def test_an_expired_delivery_says_expired_and_is_not_sent(env: DeliverEnv) -> None:
    sink = MemorySink()
    d = typed(expires_at=now_ms() - 1000)
    out = await env.handler(sink).handle([record(env, d)])
    assert sink.calls == []
    assert statuses(env, out) == [(d.delivery_id, Status.EXPIRED, None)]
    assert await env.ledger(d.delivery_id) is None


# --- twins only: outages the real services cannot be told to have -------------------------

class UpdatesFail(MemoryCircuit):
    """Redis answers the load but is gone by the time of the observation."""

    async def update(self, change: Change) -> Breaker:
        raise ConnectionError("redis went away")


def test_without_redis_the_circuit_skips_an_observation_and_the_delivery_is_sent() -> None:
    env = MemoryDeliverEnv()
    sink = MemorySink()
    d = typed()
    stores = DeliverStores(MemoryLedger(120.0), UpdatesFail(), env.stores(DeliverTuning()).devices)
    ctx = Context(settings=env.settings, codec=env.codec, output=None, redis=None, db=None,  # type: ignore[arg-type]
                  metrics=Metrics())
    handler = DeliverHandler(ctx, Channel.EMAIL, Lane.INTERACTIVE, sink, LaneGate(), DeliverTuning(), stores=stores)
    out = asyncio.run(handler.handle([record(env, d)]))
    assert [s for _, s, _ in statuses(env, out)] == [Status.SENT]
    assert stores.ledger.status(d.delivery_id) == LedgerStatus.SENT  # type: ignore[attr-defined]


class CountedCircuit(MemoryCircuit):
    def __init__(self) -> None:
        super().__init__()
        self.updates = 0

    async def update(self, change: Change) -> Breaker:
        self.updates += 1
        return await super().update(change)


def test_a_healthy_provider_leaves_the_shared_circuit_alone_and_a_failure_and_the_next_success_are_recorded() -> None:
    env = MemoryDeliverEnv()
    circuit = CountedCircuit()
    stores = DeliverStores(MemoryLedger(120.0), circuit, env.stores(DeliverTuning()).devices)
    ctx = Context(settings=env.settings, codec=env.codec, output=None, redis=None, db=None,  # type: ignore[arg-type]
                  metrics=Metrics())
    sink = MemorySink()
    handler = DeliverHandler(ctx, Channel.EMAIL, Lane.INTERACTIVE, sink, LaneGate(), DeliverTuning(), stores=stores)
    asyncio.run(handler.handle([record(env, typed()) for _ in range(3)]))
    assert len(sink.calls) == 1 and circuit.updates == 0   # closed, no failures, all sent: nothing to write
    failing = typed()
    sink.script(failing.address, Retryable("503"))
    asyncio.run(handler.handle([record(env, failing)]))
    assert circuit.updates == 1 and circuit.state.failures == 1
    asyncio.run(handler.handle([record(env, typed())]))
    assert circuit.updates == 2 and circuit.state.failures == 0   # the success after it resets the count


def test_a_batch_retried_after_redis_failed_between_claim_and_call_sends_its_own_claims_at_once() -> None:
    """The runner retries the batch; its claims are young but its own, with no call behind them: no 2-minute hold."""
    env = MemoryDeliverEnv()
    sink = MemorySink()
    d = typed()
    circuit = MemoryCircuit()
    stores = DeliverStores(MemoryLedger(120.0), circuit, env.stores(DeliverTuning()).devices)
    ctx = Context(settings=env.settings, codec=env.codec, output=None, redis=None, db=None,  # type: ignore[arg-type]
                  metrics=Metrics())
    handler = DeliverHandler(ctx, Channel.EMAIL, Lane.INTERACTIVE, sink, LaneGate(), DeliverTuning(), stores=stores)
    rec = record(env, d)
    circuit.reachable = False   # Redis goes away after the claim, at the circuit check before the call
    with pytest.raises(ConnectionError):
        asyncio.run(handler.handle([rec]))
    assert sink.calls == [] and stores.ledger.status(d.delivery_id) == LedgerStatus.CLAIMED  # type: ignore[attr-defined]
    circuit.reachable = True
    out = asyncio.run(handler.handle([rec]))
    assert [s for _, s, _ in statuses(env, out)] == [Status.SENT] and retries(env, out) == []
    assert len(sink.calls) == 1
    # another handler (another worker) still takes the young claim for a live call and holds it back
    other = DeliverHandler(ctx, Channel.EMAIL, Lane.INTERACTIVE, sink, LaneGate(), DeliverTuning(), stores=stores)
    d2 = typed()
    circuit.reachable = False
    with pytest.raises(ConnectionError):
        asyncio.run(handler.handle([record(env, d2)]))
    circuit.reachable = True
    out = asyncio.run(other.handle([record(env, d2)]))
    assert len(sink.calls) == 1 and len(retries(env, out)) == 1


def test_the_mark_after_a_provider_call_waits_out_a_postgresql_outage() -> None:
    env = MemoryDeliverEnv()
    d = typed()
    ledger = MemoryLedger(120.0)

    class GoesDown(MemorySink):
        async def send_batch(self, deliveries: list[Delivery]):  # type: ignore[override]
            ledger.reachable = False   # PostgreSQL goes away while the provider has the chunk
            asyncio.get_running_loop().call_later(0.3, setattr, ledger, "reachable", True)
            return await super().send_batch(deliveries)

    sink = GoesDown()
    stores = DeliverStores(ledger, MemoryCircuit(), env.stores(DeliverTuning()).devices)
    ctx = Context(settings=env.settings, codec=env.codec, output=None, redis=None, db=None,  # type: ignore[arg-type]
                  metrics=Metrics())
    handler = DeliverHandler(ctx, Channel.EMAIL, Lane.INTERACTIVE, sink, LaneGate(), DeliverTuning(), stores=stores)
    out = asyncio.run(handler.handle([record(env, d)]))
    assert [s for _, s, _ in statuses(env, out)] == [Status.SENT]
    assert ledger.status(d.delivery_id) == LedgerStatus.SENT and len(sink.calls) == 1


def test_a_bulk_send_whose_status_rows_are_refused_is_marked_in_the_ledger_and_not_sent_again() -> None:
    """Not an outage: PostgreSQL refuses the chunk's status rows. The batch fails, but its sends are in the ledger
    first, so its retry, even after the claims' lease, acknowledges them without a second call."""
    env = MemoryDeliverEnv()
    tuning = DeliverTuning(claim_lease=0.0)
    refuse = True

    class Refusing(MemoryStatusStore):
        async def write(self, folded: Fold) -> None:
            if refuse:
                raise ValueError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
            await super().write(folded)

    statuses_store = Refusing()
    stores = replace(DeliverStores.memory(tuning), statuses=statuses_store,
                     ledger=MemoryLedger(0.0, history_sent=statuses_store.sent))
    ctx = Context(settings=env.settings, codec=env.codec, output=None, redis=None, db=None,  # type: ignore[arg-type]
                  metrics=Metrics())
    sink = MemorySink()
    handler = DeliverHandler(ctx, Channel.EMAIL, Lane.BULK, sink, LaneGate(), tuning, stores=stores)
    d = typed(lane="bulk", category="marketing", campaign_id="c-refused", event_type="CampaignMessage")
    rec = record(env, d, deliver_topic(env.settings, Channel.EMAIL, "bulk"))
    with pytest.raises(ValueError, match="NUL"):
        asyncio.run(handler.handle([rec]))
    assert len(sink.calls) == 1 and stores.ledger.status(d.delivery_id) == LedgerStatus.SENT  # type: ignore[attr-defined]
    refuse = False
    asyncio.run(handler.handle([rec]))
    assert len(sink.calls) == 1
    assert asyncio.run(statuses_store.history_of(d.notification_id)) == [Status.SENT]


def test_a_bulk_batch_waits_while_the_interactive_lane_of_its_channel_holds_one() -> None:
    env = MemoryDeliverEnv()
    order: list[str] = []

    class Slow(MemorySink):
        async def send_batch(self, deliveries: list[Delivery]):  # type: ignore[override]
            order.append(f"{deliveries[0].lane} called")
            await asyncio.sleep(0.2)
            order.append(f"{deliveries[0].lane} answered")
            return await super().send_batch(deliveries)

    async def go() -> None:
        gate = LaneGate()
        tuning = DeliverTuning()
        ctx = Context(settings=env.settings, codec=env.codec, output=None, redis=None, db=None,  # type: ignore[arg-type]
                      metrics=Metrics())
        fast = DeliverHandler(ctx, Channel.EMAIL, Lane.INTERACTIVE, Slow(), gate, tuning, DeliverStores.memory(tuning))
        bulk = DeliverHandler(ctx, Channel.EMAIL, Lane.BULK, Slow(), gate, tuning, DeliverStores.memory(tuning))
        interactive = asyncio.create_task(fast.handle([record(env, typed())]))
        await asyncio.sleep(0.05)   # the interactive batch holds the gate
        await bulk.handle([record(env, typed(lane=Lane.BULK))])
        await interactive

    asyncio.run(go())
    assert order == ["interactive called", "interactive answered", "bulk called", "bulk answered"]
