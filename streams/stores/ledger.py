"""The delivery ledger: a delivery is claimed before its provider call and marked after it.

``claim`` says per delivery whether to send it (a new row, an earlier failure,
or a claim older than the lease), that it was already sent (with its provider
message id), or that a claim younger than the lease may be a live call
elsewhere. ``mark`` records what the provider said. ``PostgresLedger`` is the
``deliveries`` table, one statement each; ``MemoryLedger`` is its in-process
twin for tests.

A send is recorded one of two ways: the ledger row marked 'sent' (the
interactive lane, whose statuses travel through the status topic), or the
history's sent-once row of the delivery, written right after the call in the
transaction of its status (the bulk lane, which writes its statuses itself and
leaves the row 'claimed': one UPDATE less per campaign recipient). The claim
takes either for 'sent' and never re-takes such a row, however old.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
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
), prev AS (   -- delivery_state (migration 020): 'sent' when the ledger or the history recorded the send
    SELECT s.delivery_id, s.status, s.provider_message_id FROM delivery_state s JOIN input USING (delivery_id)
), claimed AS (
    INSERT INTO deliveries AS d (delivery_id, notification_id, channel, address, status, attempts, claimed_at, updated_at)
    SELECT delivery_id, notification_id, channel, address, 'claimed', 1, now(), now() FROM input
    ON CONFLICT (delivery_id) DO UPDATE SET status = 'claimed', attempts = d.attempts + 1, claimed_at = now(),
        updated_at = now(), error = NULL
    WHERE (d.status = 'failed' OR (d.status = 'claimed' AND d.claimed_at <= now() - make_interval(secs => %(lease)s)))
        AND NOT EXISTS (SELECT 1 FROM status_history h
                        WHERE h.delivery_id = d.delivery_id AND h.status = 'sent' AND h.delivery_id IS NOT NULL)
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

    ``history_sent``: delivery id → provider message id of the history's sent-once rows (a ``MemoryStatusStore``'s
    ``sent``), which count as 'sent' as they do in PostgreSQL. ``reachable = False`` makes every call fail as
    PostgreSQL down would.
    """

    def __init__(self, lease: float, clock: Callable[[], float] = time.monotonic,
                 history_sent: Mapping[str, str | None] | None = None) -> None:
        self.lease = lease
        self.clock = clock
        self.history_sent: Mapping[str, str | None] = history_sent if history_sent is not None else {}
        self.rows: dict[str, Row] = {}
        self.reachable = True

    async def claim(self, deliveries: Sequence[Delivery]) -> list[Claim]:
        self._check()
        now = self.clock()
        out: list[Claim] = []
        for d in deliveries:
            row = self.rows.get(d.delivery_id)
            previous = row.status if row else None
            pmid = row.provider_message_id if row else None
            if row is not None and d.delivery_id in self.history_sent:
                previous, pmid = LedgerStatus.SENT, pmid or self.history_sent[d.delivery_id]
            won = row is None or previous == LedgerStatus.FAILED or (
                previous == LedgerStatus.CLAIMED and row.claimed_at <= now - self.lease)
            if row is None:
                self.rows[d.delivery_id] = Row(d.notification_id, str(d.channel), d.address, LedgerStatus.CLAIMED, 1, now)
            elif won:
                row.status, row.attempts, row.claimed_at, row.error = LedgerStatus.CLAIMED, row.attempts + 1, now, None
            out.append(Claim(ledger_decision(won, previous), pmid))
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
        """As ``delivery_state`` says it: 'sent' when the ledger or the history recorded the send."""
        row = self.rows.get(delivery_id)
        if row is None:
            return None
        return LedgerStatus.SENT if delivery_id in self.history_sent else row.status

    def _check(self) -> None:
        if not self.reachable:
            raise ConnectionError("memory ledger: unreachable")
