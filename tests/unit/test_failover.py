"""Provider failover over the deliver handler's in-memory twins: the second provider is called while the first one's
circuit is open, never twice for one delivery, and the first one gets its traffic back once its circuit closes.

The real path (two sandbox providers, a campaign, the primary down and back) is tests/e2e/test_failover.py.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any

from infra.settings import DeliverTuning, Settings
from schemas.vocabulary import Channel, Lane, Status
from sinks.errors import ProviderRejected, Retryable
from sinks.memory import MemorySink
from streams.handlers.deliver import DeliverHandler, LaneGate
from streams.metrics import Metrics
from streams.runtime.context import Context
from tests.unit.test_deliver_handler import MemoryDeliverEnv, record, statuses, typed


def handler(env: MemoryDeliverEnv, primary: MemorySink, second: MemorySink | None, **tuning: Any) -> DeliverHandler:
    tune = DeliverTuning(**{"breaker_failures": 2, "breaker_open_seconds": 60.0, **tuning})
    ctx = Context(settings=env.settings, codec=env.codec, output=None, redis=None, db=None,  # type: ignore[arg-type]
                  metrics=Metrics())
    return DeliverHandler(ctx, Channel.EMAIL, Lane.INTERACTIVE, primary, LaneGate(), tune, stores=env.stores(tune),
                          failover=second)


def test_while_the_primarys_circuit_is_open_the_second_provider_sends_and_nothing_goes_twice():
    env = MemoryDeliverEnv()

    async def scenario() -> None:
        primary = MemorySink(provider="sendgrid", otherwise=Retryable("503"))
        second = MemorySink(provider="smtp")
        h = handler(env, primary, second)
        first = [typed() for _ in range(2)]
        out = await h.handle([record(env, d) for d in first])          # two failures: the primary's circuit opens
        assert [s for _, s, _ in statuses(env, out)] == [Status.RETRYING, Status.RETRYING]
        assert second.calls == []
        later = [typed() for _ in range(3)]
        out = await h.handle([record(env, d) for d in later])
        assert len(primary.calls) == 1 and [d.delivery_id for d in second.given] == [d.delivery_id for d in later]
        assert [s for _, s, _ in statuses(env, out)] == [Status.SENT] * 3
        # the first two come back from their retry tier: sent once, by the second provider
        out = await h.handle([record(env, d) for d in first])
        assert sorted(d.delivery_id for d in second.given) == sorted(d.delivery_id for d in [*first, *later])
        # a replay of all five: the ledger says sent, no provider is called again
        await h.handle([record(env, d) for d in [*first, *later]])
        assert len(second.given) == 5 and len(primary.calls) == 1
        sent = h.ctx.metrics.deliveries.labels(Channel.EMAIL, "smtp", "sent")._value.get()
        assert sent == 5 and h.ctx.metrics.deliveries.labels(Channel.EMAIL, "sendgrid", "sent")._value.get() == 0

    asyncio.run(scenario())


def test_the_primary_gets_its_traffic_back_once_its_circuit_closes():
    env = MemoryDeliverEnv()

    async def scenario() -> None:
        primary = MemorySink(provider="sendgrid", otherwise=Retryable("503"))
        second = MemorySink(provider="smtp")
        h = handler(env, primary, second, breaker_open_seconds=0.2, breaker_close_after=1)
        await h.handle([record(env, typed()) for _ in range(2)])       # opens
        await h.handle([record(env, typed())])
        assert len(second.given) == 1
        primary.otherwise = None                                       # the primary recovers
        time.sleep(0.25)                                               # past the open period: a probe goes to it
        back = [typed() for _ in range(3)]
        await h.handle([record(env, d) for d in back])
        # the half-open probe alone, then (closed again) the rest
        assert [[d.delivery_id for d in call] for call in primary.calls[-2:]] == [
            [back[0].delivery_id], [back[1].delivery_id, back[2].delivery_id]]
        assert len(second.given) == 1

    asyncio.run(scenario())


def test_without_a_second_provider_an_open_circuit_sends_work_to_the_ladder_as_before():
    env = MemoryDeliverEnv()

    async def scenario() -> None:
        primary = MemorySink(provider="sendgrid", otherwise=Retryable("503"))
        h = handler(env, primary, None)
        await h.handle([record(env, typed()) for _ in range(2)])
        out = await h.handle([record(env, typed())])
        assert len(primary.calls) == 1 and [s for _, s, _ in statuses(env, out)] == [Status.RETRYING]

    asyncio.run(scenario())


def test_a_second_provider_with_smaller_requests_gets_chunks_it_can_take():
    env = MemoryDeliverEnv()

    async def scenario() -> None:
        primary = MemorySink(provider="sendgrid", otherwise=Retryable("503"))
        second = MemorySink(provider="smtp", max_batch=2)
        h = handler(env, primary, second)
        await h.handle([record(env, typed()) for _ in range(2)])
        await h.handle([record(env, typed()) for _ in range(5)])
        assert [len(call) for call in second.calls] == [2, 2, 1]

    asyncio.run(scenario())


def test_the_failover_provider_must_differ_from_the_first():
    import pytest

    with pytest.raises(ValueError, match="HERALD_EMAIL_FAILOVER_PROVIDER"):
        Settings(email_provider="smtp", email_failover_provider="smtp")


def test_a_primary_refusing_the_account_hands_the_same_call_to_the_second_provider_once():
    env = MemoryDeliverEnv()

    async def scenario() -> None:
        primary = MemorySink(provider="sendgrid", otherwise=ProviderRejected("sendgrid 401: bad api key"))
        second = MemorySink(provider="smtp")
        h = handler(env, primary, second, breaker_failures=3)
        batch = [typed(), typed()]
        out = await h.handle([record(env, d) for d in batch])
        assert [s for _, s, _ in statuses(env, out)] == [Status.SENT] * 2
        assert len(primary.calls) == 1 and [d.delivery_id for d in second.given] == [d.delivery_id for d in batch]
        await h.handle([record(env, typed())])        # refused again, a third failure: the primary's circuit opens
        assert len(primary.calls) == 2 and len(second.given) == 3
        await h.handle([record(env, typed())])        # straight to the second provider now
        assert len(primary.calls) == 2 and len(second.given) == 4
        await h.handle([record(env, d) for d in batch])   # a replay: the ledger says sent
        assert len(second.given) == 4 and len(primary.calls) == 2
        assert h.ctx.metrics.deliveries.labels(Channel.EMAIL, "smtp", "sent")._value.get() == 4

    asyncio.run(scenario())


def test_without_a_second_provider_an_account_refusal_is_dead_lettered_with_its_class():
    env = MemoryDeliverEnv()

    async def scenario() -> None:
        h = handler(env, MemorySink(provider="sendgrid", otherwise=ProviderRejected("sendgrid 403: no credits")), None)
        out = await h.handle([record(env, typed())])
        changes = [env.codec.decode(o.value).record for o in out if o.topic == env.settings.topic("status")]
        assert [(c["status"], c["reason"]) for c in changes] == [(Status.FAILED, "provider_rejected: sendgrid 403: no credits")]

    asyncio.run(scenario())
