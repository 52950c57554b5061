"""Erasing a user's personal data (``DELETE /v1/users/{id}``), keeping anonymous counts.

In one transaction: the profile, its devices and preferences go (the ``users`` row and its cascade);
the user's notifications stay, so counts by status, template, category and campaign stay true, but
their user id becomes ``erased#<random>`` (an id may be an email address; ``#`` is never a valid user id,
so no request can reach them again), every address in the delivery ledger becomes ``erased``, and the
free texts that may quote an address or rendered content (status reasons, provider errors) are nulled.
Rows of the scheduler's outbox for those notifications (they hold the whole event: variables, inline
addresses) are deleted, so nothing is sent later. The caller drops the cached recipient after the commit.

Not erased here: records already in Kafka topics, which expire with the topics' retention.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from psycopg import AsyncConnection

ERASED_ADDRESS = "erased"
ERASED_ID_PREFIX = "erased#"


@dataclass(frozen=True, slots=True)
class Erased:
    user: bool            # a stored profile was deleted
    notifications: int
    deliveries: int
    devices: int
    scheduled: int        # outbox rows deleted (not sent)


async def erase_user(conn: AsyncConnection, user_id: str, tenant: str | None) -> Erased | None:
    """Erase ``user_id``'s personal data; None when there is nothing to erase within ``tenant`` (None: any)."""
    async with conn.transaction():
        row = await (await conn.execute("SELECT tenant FROM users WHERE id = %s FOR UPDATE", (user_id,))).fetchone()
        if tenant is not None and (row is None or row[0] != tenant):
            return None
        ids = [r[0] for r in await (await conn.execute(
            "SELECT id FROM notifications WHERE user_id = %s FOR UPDATE", (user_id,))).fetchall()]
        if row is None and not ids:
            return None
        devices = await (await conn.execute("SELECT count(*) FROM devices WHERE user_id = %s", (user_id,))).fetchone()
        await conn.execute("DELETE FROM users WHERE id = %s", (user_id,))  # devices and preferences cascade
        anonymous = f"{ERASED_ID_PREFIX}{uuid.uuid4().hex}"
        await conn.execute("UPDATE notifications SET user_id = %s, reason = NULL WHERE id = ANY(%s)", (anonymous, ids))
        await conn.execute("UPDATE status_history SET reason = NULL WHERE notification_id = ANY(%s) AND reason IS NOT NULL",
                           (ids,))
        deliveries = await conn.execute(
            "UPDATE deliveries SET address = %s, error = NULL WHERE notification_id = ANY(%s)", (ERASED_ADDRESS, ids))
        scheduled = await conn.execute("DELETE FROM scheduled WHERE notification_id = ANY(%s)", (ids,))
        await conn.execute("DELETE FROM recurring_targets WHERE user_id = %s", (user_id,))   # leaves every schedule
    return Erased(user=row is not None, notifications=len(ids), deliveries=deliveries.rowcount,
                  devices=int(devices[0]) if devices else 0, scheduled=scheduled.rowcount)
