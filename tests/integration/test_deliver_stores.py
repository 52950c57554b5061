"""The deliver handler's scenarios over the real stores: the PostgreSQL ledger and devices, the Redis circuit.

The scenarios are tests/unit/test_deliver_handler.py's, imported here with the ``deliver_stores``
fixture overridden: each runs over the in-memory twins and over PostgreSQL + Redis, so a twin that
drifts from its store fails here. The sink is the in-memory one in both (the real sinks have their
own tests); Kafka is not needed, the handler's outputs are its return value.
"""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from infra.settings import DeliverTuning, Settings
from schemas.codec import Codec
from schemas.vocabulary import LedgerStatus
from streams.handlers.deliver import DeliverStores
from streams.stores.recipients import invalidation_key
from tests.unit.test_deliver_handler import (  # noqa: F401 - the scenarios, collected here over both kinds of store
    DeliverEnv,
    MemoryDeliverEnv,
    test_a_429_past_the_wait_budget_is_handed_back_and_pauses_the_provider,
    test_a_bulk_chunk_goes_in_one_call_and_the_handler_writes_its_statuses,
    test_a_claim_younger_than_the_lease_is_handed_back_without_a_call,
    test_a_copy_in_the_same_batch_is_sent_once,
    test_a_deactivated_device_drops_its_users_cached_recipient,
    test_a_delivery_is_sent_once_and_marked,
    test_a_replay_of_a_sent_delivery_says_sent_again_without_a_second_call,
    test_a_security_notification_goes_in_the_first_chunk_of_its_batch,
    test_a_short_429_is_waited_out_without_spending_an_attempt,
    test_an_expired_delivery_says_expired_and_is_not_sent,
    test_an_invalid_token_deactivates_the_device,
    test_permanent_is_a_dead_letter_and_failed,
    test_retryable_goes_to_the_first_tier_with_attempt_plus_one_and_is_sent_from_there,
    test_temporary_failures_in_a_row_deactivate_a_device,
    test_the_circuit_opens_after_n_failures_and_an_open_circuit_sends_to_the_ladder_without_calling,
)

pytestmark = pytest.mark.integration


class RealDeliverEnv(DeliverEnv):
    """PostgreSQL (this session's database) and Redis (this test's key prefix), opened inside the scenario's loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.codec = Codec()
        self.user_id = f"u-{uuid.uuid4().hex[:8]}"
        self._db: AsyncConnectionPool | None = None
        self._redis: aioredis.Redis | None = None

    def run(self, scenario: Callable[[DeliverEnv], Awaitable[None]]) -> None:
        async def go() -> None:
            self._db = AsyncConnectionPool(self.settings.dsn, min_size=1, max_size=2, open=False,
                                           kwargs={"autocommit": True})
            await self._db.open(wait=True, timeout=30)
            self._redis = aioredis.from_url(self.settings.redis_dsn)
            try:
                await scenario(self)
            finally:
                await self._redis.aclose()
                await self._db.close()

        asyncio.run(go())

    def stores(self, tuning: DeliverTuning) -> DeliverStores:
        assert self._db is not None and self._redis is not None
        # the circuit's key is named for the provider under this test's Redis prefix: shared by the test's handlers
        return DeliverStores.real(self._db, self._redis, self.settings, "memory", tuning)

    async def ledger(self, delivery_id: str) -> tuple[LedgerStatus, int] | None:
        assert self._db is not None
        async with self._db.connection() as conn:
            row = await (await conn.execute("SELECT status, attempts FROM delivery_state WHERE delivery_id = %s",
                                            (delivery_id,))).fetchone()
        return (LedgerStatus(row[0]), row[1]) if row else None

    async def add_device(self, token: str) -> None:
        assert self._db is not None
        async with self._db.connection() as conn:
            await conn.execute("INSERT INTO users (id) VALUES (%s) ON CONFLICT DO NOTHING", (self.user_id,))
            await conn.execute("INSERT INTO devices (user_id, token, platform) VALUES (%s, %s, 'android')",
                               (self.user_id, token))

    async def recipient_dropped(self) -> bool:
        assert self._redis is not None
        return bool(await self._redis.exists(invalidation_key(self.settings, self.user_id)))

    async def device(self, token: str) -> tuple[bool, int, str | None]:
        assert self._db is not None
        async with self._db.connection() as conn:
            row = await (await conn.execute(
                "SELECT active, temp_failures, deactivated_reason FROM devices WHERE token = %s", (token,))).fetchone()
        assert row is not None
        return row[0], row[1], row[2]


@pytest.fixture(params=["memory", "real"])
def deliver_stores(request) -> DeliverEnv:
    if request.param == "memory":
        return MemoryDeliverEnv()
    return RealDeliverEnv(request.getfixturevalue("settings"))
