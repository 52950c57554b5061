"""The status and receipts handlers over a world of stores: the in-memory twins or PostgreSQL + Redis.

The scenarios (``tests/unit/test_status_handler.py``, ``tests/unit/test_receipts_handler.py`` and
their mirrors in ``tests/integration``) seed and read through a ``World``, so each one runs
unchanged against both. Everything here is async: build a world inside the test's event loop.
"""
from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from infra.kafka.records import InRecord, OutRecord
from infra.settings import Settings
from schemas.codec import Codec
from schemas.records import Receipt, StatusChange
from schemas.vocabulary import Channel, ReceiptStatus, Status
from streams.handlers.receipts import ReceiptsHandler
from streams.handlers.status_writer import StatusHandler
from streams.metrics import Metrics
from streams.stages.receipts import DeliveryRow
from streams.stages.status_change import encode_status
from streams.stages.status_fold import fold
from streams.stores.receipts import (
    MemoryReceiptStore,
    MemoryUser,
    PostgresReceiptStore,
    ReceiptStore,
)
from streams.stores.recipients import recipient_key
from streams.stores.statuses import MemoryStatusStore, PostgresStatusStore, StatusStore


@dataclass(frozen=True, slots=True)
class Sent:
    """A notification the deliver agent sent: its user, its notification row (``sent``) and its ledger row."""

    notification_id: str
    user_id: str
    address: str
    provider_message_id: str
    channel: Channel = Channel.EMAIL

    @property
    def delivery_id(self) -> str:
        return "d-" + self.notification_id


class World(Protocol):
    settings: Settings
    codec: Codec
    metrics: Metrics
    statuses: StatusStore
    receipts: ReceiptStore

    async def seed(self, sent: Sent) -> None: ...

    async def cache_recipient(self, user_id: str) -> None: ...

    async def recipient_cached(self, user_id: str) -> bool: ...

    async def undeliverable(self, user_id: str, channel: Channel) -> bool: ...


def sent_change(sent: Sent) -> StatusChange:
    return StatusChange(notification_id=sent.notification_id, event_id="ev-" + sent.notification_id,
                        user_id=sent.user_id, status=Status.SENT, at=1_000, event_type="OrderPlaced",
                        channel=sent.channel, delivery_id=sent.delivery_id,
                        provider_message_id=sent.provider_message_id)


class MemoryWorld:
    def __init__(self, settings: Settings, codec: Codec) -> None:
        self.settings, self.codec, self.metrics = settings, codec, Metrics()
        self.statuses: StatusStore = MemoryStatusStore()
        self.twin = MemoryReceiptStore()
        self.receipts: ReceiptStore = self.twin

    async def seed(self, sent: Sent) -> None:
        await self.statuses.write(fold([sent_change(sent)]))
        is_email = sent.channel == Channel.EMAIL
        self.twin.users[sent.user_id] = MemoryUser(sent.user_id, email=sent.address if is_email else None,
                                                       phone=None if is_email else sent.address)
        self.twin.rows.append(DeliveryRow(sent.delivery_id, sent.notification_id, sent.channel, sent.address,
                                              sent.provider_message_id, sent.user_id, "ev-" + sent.notification_id,
                                              "OrderPlaced"))

    async def cache_recipient(self, user_id: str) -> None:
        self.twin.cached.add(user_id)

    async def recipient_cached(self, user_id: str) -> bool:
        return user_id in self.twin.cached

    async def undeliverable(self, user_id: str, channel: Channel) -> bool:
        user = self.twin.users[user_id]
        return user.email_undeliverable if channel == Channel.EMAIL else user.phone_undeliverable


class RealWorld:
    def __init__(self, settings: Settings, codec: Codec, db: AsyncConnectionPool, redis: aioredis.Redis) -> None:
        self.settings, self.codec, self.metrics = settings, codec, Metrics()
        self.db, self.redis = db, redis
        self.statuses: StatusStore = PostgresStatusStore(db)
        self.receipts: ReceiptStore = PostgresReceiptStore(db, redis, settings)

    async def seed(self, sent: Sent) -> None:
        column = "email" if sent.channel == Channel.EMAIL else "phone"
        async with self.db.connection() as conn:
            await conn.execute(f"INSERT INTO users (id, {column}) VALUES (%s, %s)", (sent.user_id, sent.address))
            await conn.execute(
                "INSERT INTO deliveries (delivery_id, notification_id, channel, address, status, provider_message_id,"
                " sent_at) VALUES (%s, %s, %s, %s, 'sent', %s, now())",
                (sent.delivery_id, sent.notification_id, sent.channel, sent.address, sent.provider_message_id))
        await self.statuses.write(fold([sent_change(sent)]))

    async def cache_recipient(self, user_id: str) -> None:
        await self.redis.set(recipient_key(self.settings, user_id), b"cached")

    async def recipient_cached(self, user_id: str) -> bool:
        return bool(await self.redis.exists(recipient_key(self.settings, user_id)))

    async def undeliverable(self, user_id: str, channel: Channel) -> bool:
        column = "email_undeliverable" if channel == Channel.EMAIL else "phone_undeliverable"
        async with self.db.connection() as conn:
            row = await (await conn.execute(f"SELECT {column} FROM users WHERE id = %s", (user_id,))).fetchone()
        assert row is not None, f"no user {user_id}"
        return bool(row[0])


@asynccontextmanager
async def open_world(kind: str, settings: Settings, codec: Codec) -> AsyncIterator[World]:
    """``kind`` is "memory" (the twins) or "real" (``settings``' PostgreSQL and Redis)."""
    if kind == "memory":
        yield MemoryWorld(settings, codec)
        return
    db = AsyncConnectionPool(settings.dsn, min_size=1, max_size=2, open=False, kwargs={"autocommit": True})
    await db.open(wait=True, timeout=30)
    redis = aioredis.from_url(settings.redis_dsn)
    try:
        yield RealWorld(settings, codec, db, redis)
    finally:
        await redis.aclose()
        await db.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def unique_phone() -> str:
    return f"+43660{uuid.uuid4().int % 10**7:07d}"


def status_handler(world: World) -> StatusHandler:
    return StatusHandler(world.settings, world.codec, world.metrics, world.statuses)


def receipts_handler(world: World) -> ReceiptsHandler:
    return ReceiptsHandler(world.settings, world.codec, world.metrics, world.receipts)


def as_input(records: list[OutRecord]) -> list[InRecord]:
    """What a consumer of these produced records would read."""
    return [InRecord(r.topic, 0, offset, r.key, r.value, list(r.headers)) for offset, r in enumerate(records)]


def status_input(world: World, changes: list[StatusChange]) -> list[InRecord]:
    return as_input([encode_status(world.codec, world.settings.topic("status"), c) for c in changes])


def receipt_input(world: World, receipts: list[Receipt]) -> list[InRecord]:
    topic = world.settings.topic("receipts")
    return as_input([OutRecord(topic, r.provider_message_id.encode(), world.codec.encode("Receipt", r.to_avro()))
                     for r in receipts])


def change(notification_id: str, status: Status, at: int = 1_000) -> StatusChange:
    return StatusChange(notification_id=notification_id, event_id=notification_id, user_id="u1", status=status,
                        at=at, event_type="OrderPlaced", channel=Channel.EMAIL)


def receipt(sent: Sent, status: ReceiptStatus, *, hard: bool = False, reason: str | None = None,
            provider_message_id: str | None = None) -> Receipt:
    return Receipt(provider="sendgrid", provider_message_id=provider_message_id or sent.provider_message_id,
                   status=status, at=5_000, hard_bounce=hard, reason=reason, address=sent.address)
