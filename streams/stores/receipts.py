"""What the receipts agent reads and writes: the ledger rows behind provider message ids, the users'
undeliverable flags, and the cached recipients of the users it marks.

``PostgresReceiptStore`` owns the SQL (and the Redis keys); ``MemoryReceiptStore`` is its twin with
the same interface for tests that run without services.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from infra.settings import Settings
from schemas.vocabulary import Channel
from streams.stages.receipts import DeliveryRow, normal_address
from streams.stores.recipients import (
    INVALIDATION_GUARD_SECONDS,
    invalidation_key,
    recipient_key,
)

# LEFT JOIN: a delivery whose notification row is not written yet comes back without a user. A send's message id is
# in the ledger row (the interactive lane) or in its sent-once history row (the bulk lane, migration 020): one
# indexed lookup each; UNION keeps one row for a send recorded in both
LOOKUP = """
SELECT d.delivery_id, d.notification_id, d.channel, d.address, d.provider_message_id, n.user_id, n.event_id, n.event_type
FROM deliveries d LEFT JOIN notifications n ON n.id = d.notification_id
WHERE d.provider_message_id = ANY(%(ids)s)
UNION
SELECT d.delivery_id, d.notification_id, d.channel, d.address, h.provider_message_id, n.user_id, n.event_id, n.event_type
FROM status_history h JOIN deliveries d ON d.delivery_id = h.delivery_id LEFT JOIN notifications n ON n.id = d.notification_id
WHERE h.status = 'sent' AND h.provider_message_id = ANY(%(ids)s) AND h.delivery_id IS NOT NULL
"""
# addresses come normalised (``normal_address``): email lower-cased, phone numbers as sent
MARK: dict[Channel, str] = {
    Channel.EMAIL: "UPDATE users SET email_undeliverable = true, updated_at = now()"
                   " WHERE lower(email) = ANY(%s) AND NOT email_undeliverable RETURNING id",
    Channel.SMS: "UPDATE users SET phone_undeliverable = true, updated_at = now()"
                 " WHERE phone = ANY(%s) AND NOT phone_undeliverable RETURNING id",
}


class ReceiptStore(Protocol):
    async def deliveries(self, provider_message_ids: list[str]) -> dict[str, list[DeliveryRow]]:
        """Provider message id → the ledger rows carrying it (ids without a row are absent)."""
        ...

    async def mark_undeliverable(self, addresses: dict[Channel, list[str]]) -> list[str]:
        """Flag the users at these (normalised) addresses; the ids of the users newly flagged."""
        ...

    async def forget_recipients(self, user_ids: list[str]) -> None:
        """Drop the users' cached recipients so the route stage reads their flags from the next event on."""
        ...


def delivery_row(row: tuple) -> DeliveryRow:
    delivery_id, notification_id, channel, address, provider_message_id, user_id, event_id, event_type = row
    return DeliveryRow(delivery_id, notification_id, Channel(channel), address, provider_message_id, user_id,
                       event_id, event_type)


def by_message_id(rows: list[DeliveryRow]) -> dict[str, list[DeliveryRow]]:
    found: dict[str, list[DeliveryRow]] = {}
    for row in rows:
        found.setdefault(row.provider_message_id, []).append(row)
    return found


class PostgresReceiptStore:
    def __init__(self, db: AsyncConnectionPool, redis: aioredis.Redis, settings: Settings) -> None:
        self.db, self.redis, self.settings = db, redis, settings

    async def deliveries(self, provider_message_ids: list[str]) -> dict[str, list[DeliveryRow]]:
        if not provider_message_ids:
            return {}
        async with self.db.connection() as conn:
            rows = await (await conn.execute(LOOKUP, {"ids": provider_message_ids})).fetchall()
        return by_message_id([delivery_row(row) for row in rows])

    async def mark_undeliverable(self, addresses: dict[Channel, list[str]]) -> list[str]:
        marked: list[str] = []
        wanted = {channel: found for channel, found in addresses.items() if found}
        if not wanted:
            return marked
        async with self.db.connection() as conn:
            for channel, found in wanted.items():
                marked += [row[0] for row in await (await conn.execute(MARK[channel], (found,))).fetchall()]
        return marked

    async def forget_recipients(self, user_ids: list[str]) -> None:
        """``invalidate_recipient`` for many users in one round trip (the marker stops a racing cache fill)."""
        if not user_ids:
            return
        pipe = self.redis.pipeline(transaction=True)
        for user_id in user_ids:
            pipe.delete(recipient_key(self.settings, user_id))
            pipe.set(invalidation_key(self.settings, user_id), b"1", ex=INVALIDATION_GUARD_SECONDS)
        await pipe.execute()


@dataclass
class MemoryUser:
    id: str
    email: str | None = None
    phone: str | None = None
    email_undeliverable: bool = False
    phone_undeliverable: bool = False


class MemoryReceiptStore:
    """The in-memory twin: ``rows`` (the ledger joined with notifications), ``users``, ``cached`` recipients."""

    def __init__(self) -> None:
        self.rows: list[DeliveryRow] = []
        self.users: dict[str, MemoryUser] = {}
        self.cached: set[str] = set()

    async def deliveries(self, provider_message_ids: list[str]) -> dict[str, list[DeliveryRow]]:
        wanted = set(provider_message_ids)
        return by_message_id([row for row in self.rows if row.provider_message_id in wanted])

    async def mark_undeliverable(self, addresses: dict[Channel, list[str]]) -> list[str]:
        emails = set(addresses.get(Channel.EMAIL, ()))
        phones = set(addresses.get(Channel.SMS, ()))
        marked: list[str] = []
        for user in self.users.values():
            if user.email and not user.email_undeliverable and normal_address(Channel.EMAIL, user.email) in emails:
                user.email_undeliverable = True
                marked.append(user.id)
            if user.phone and not user.phone_undeliverable and user.phone in phones:
                user.phone_undeliverable = True
                marked.append(user.id)
        return marked

    async def forget_recipients(self, user_ids: list[str]) -> None:
        self.cached -= set(user_ids)
