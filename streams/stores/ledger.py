"""The delivery ledger: a delivery is claimed before its provider call and marked after it.

``claim`` says per delivery whether to send it (a new row, an earlier failure,
or a claim older than the lease), that it was already sent (with its provider
message id), or that a claim younger than the lease may be a live call
elsewhere. ``mark`` records what the provider said. ``PostgresLedger`` is the
``deliveries`` table, one statement each; ``MemoryLedger`` is its in-process
twin for tests.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from psycopg_pool import AsyncConnectionPool

from infra.db import pack_all, packed
from schemas.records import Delivery
from schemas.vocabulary import LedgerStatus
from streams.stages.deliver import LedgerDecision, ledger_decision

# the columns travel packed (``infra.db.pack``): one string each, not an array dumped element by element
_CLAIMED = f"unnest({packed('ids')}, {packed('nids')}, {packed('chs')}, {packed('addrs')})"

CLAIM = f"""
WITH input AS (
    SELECT * FROM {_CLAIMED} AS t(delivery_id, notification_id, channel, address)
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

# the common case, cheaper: deliveries never claimed before. The ids it did not insert go through CLAIM.
CLAIM_NEW = f"""
INSERT INTO deliveries (delivery_id, notification_id, channel, address, status, attempts, claimed_at, updated_at)
SELECT delivery_id, notification_id, channel, address, 'claimed', 1, now(), now()
FROM {_CLAIMED} AS t(delivery_id, notification_id, channel, address)
ON CONFLICT (delivery_id) DO NOTHING RETURNING delivery_id
"""

MARK = f"""
UPDATE deliveries d SET status = u.status, provider_message_id = COALESCE(u.pmid, d.provider_message_id),
    error = u.error, sent_at = CASE WHEN u.status = 'sent' THEN now() ELSE d.sent_at END, updated_at = now()
FROM unnest({packed('ids')}, {packed('statuses')}, {packed('pmids')}, {packed('errors')})
    AS u(delivery_id, status, pmid, error)
WHERE d.delivery_id = u.delivery_id
"""


class Claim(NamedTuple):
    decision: LedgerDecision
    provider_message_id: str | None   # of a delivery already sent


class Mark(NamedTuple):
    delivery_id: str
    status: LedgerStatus
    provider_message_id: str | None = None
    error: str | None = None


class Ledger(Protocol):
    async def claim(self, deliveries: Sequence[Delivery]) -> list[Claim]:
        """One claim per delivery, in order (a batch's deliveries have distinct ids)."""
        ...

    async def mark(self, marks: Sequence[Mark]) -> None:
        ...


class PostgresLedger:
    def __init__(self, db: AsyncConnectionPool, lease: float) -> None:
        self.db = db
        self.lease = lease

    async def claim(self, deliveries: Sequence[Delivery]) -> list[Claim]:
        if not deliveries:
            return []
        async with self.db.connection() as conn:
            rows = await (await conn.execute(CLAIM_NEW, _claim_params(deliveries))).fetchall()
            new = Claim(ledger_decision(True, None), None)
            by_id = {row[0]: new for row in rows}
            seen = [d for d in deliveries if d.delivery_id not in by_id]
            if seen:
                rows = await (await conn.execute(CLAIM, {**_claim_params(seen), "lease": self.lease})).fetchall()
                by_id.update((row[0], Claim(ledger_decision(row[1], row[2]), row[3])) for row in rows)
        return [by_id[d.delivery_id] for d in deliveries]

    async def mark(self, marks: Sequence[Mark]) -> None:
        if not marks:
            return
        ids, statuses, pmids, errors = zip(*marks, strict=True)
        async with self.db.connection() as conn:
            await conn.execute(MARK, pack_all({"ids": ids, "statuses": statuses, "pmids": pmids, "errors": errors}))


def _claim_params(deliveries: Sequence[Delivery]) -> dict[str, str]:
    return pack_all({"ids": [d.delivery_id for d in deliveries], "nids": [d.notification_id for d in deliveries],
                     "chs": [d.channel for d in deliveries], "addrs": [d.address for d in deliveries]})


@dataclass
class Row:
    notification_id: str
    channel: str
    address: str
    status: LedgerStatus
    attempts: int
    claimed_at: float
    provider_message_id: str | None = None
    error: str | None = None


class MemoryLedger:
    """The same rules as ``CLAIM`` and ``MARK`` over a dict; ``clock`` (seconds) ages the claims.

    ``reachable = False`` makes every call fail as PostgreSQL down would.
    """

    def __init__(self, lease: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lease = lease
        self.clock = clock
        self.rows: dict[str, Row] = {}
        self.reachable = True

    async def claim(self, deliveries: Sequence[Delivery]) -> list[Claim]:
        self._check()
        now = self.clock()
        out: list[Claim] = []
        for d in deliveries:
            row = self.rows.get(d.delivery_id)
            previous = row.status if row else None
            won = row is None or row.status == LedgerStatus.FAILED or (
                row.status == LedgerStatus.CLAIMED and row.claimed_at <= now - self.lease)
            if row is None:
                self.rows[d.delivery_id] = Row(d.notification_id, str(d.channel), d.address, LedgerStatus.CLAIMED, 1, now)
            elif won:
                row.status, row.attempts, row.claimed_at, row.error = LedgerStatus.CLAIMED, row.attempts + 1, now, None
            out.append(Claim(ledger_decision(won, previous), row.provider_message_id if row else None))
        return out

    async def mark(self, marks: Sequence[Mark]) -> None:
        self._check()
        for mark in marks:
            row = self.rows.get(mark.delivery_id)
            if row is None:
                continue
            row.status, row.error = mark.status, mark.error
            row.provider_message_id = mark.provider_message_id or row.provider_message_id

    def status(self, delivery_id: str) -> LedgerStatus | None:
        row = self.rows.get(delivery_id)
        return row.status if row else None

    def _check(self) -> None:
        if not self.reachable:
            raise ConnectionError("memory ledger: unreachable")
