"""The receipts agent: provider receipts → status changes; a hard bounce marks the address undeliverable.

Per batch: one lookup finds the deliveries behind all the batch's provider
message ids (a receipt that finds none, or no status row yet, is early: it
climbs the retry ladder and is dead-lettered only after the last tier), one
UPDATE per channel marks hard-bounced addresses, one Redis round trip drops the affected users' cached recipients (so the route stage
skips the address from the next event on). The store is ``streams.stores.receipts``.
"""
from __future__ import annotations

from infra.kafka.dead_letters import DeadLetter, dead_letter
from infra.kafka.records import ATTEMPT, TRACE, InRecord, OutRecord, now_ms
from infra.settings import Settings
from schemas.codec import Codec, DecodeError
from schemas.records import Receipt
from streams.metrics import Metrics
from streams.runtime.context import Context
from streams.runtime.registry import AgentSpec
from streams.stages.receipts import plan
from streams.stages.retry import Ladder, held_headers
from streams.stages.status_change import encode_status
from streams.stores.receipts import PostgresReceiptStore, ReceiptStore

STAGE = "status"  # receipts are status tracking; the DLQ's stage names are shared with `herald dlq`
# unmatched receipts that time may match: the delivery's ledger mark or its status row is not written yet
EARLY = frozenset({"unknown_provider_message", "notification_not_found"})


def decode_receipt(codec: Codec, value: bytes | None) -> Receipt:
    decoded = codec.decode(value)
    if decoded.name != "Receipt":
        raise DecodeError("wrong_type", f"expected Receipt, got {decoded.name}")
    return Receipt.from_avro(decoded.record)


class ReceiptsHandler:
    name = "receipts"
    stage = STAGE

    def __init__(self, settings: Settings, codec: Codec, metrics: Metrics, store: ReceiptStore) -> None:
        self.codec, self.metrics, self.store = codec, metrics, store
        self.dlq_topic, self.status_topic = settings.topic("dlq"), settings.topic("status")
        self.max_record_bytes = settings.max_record_bytes
        self.ladder = Ladder.from_settings(settings)

    async def handle(self, batch: list[InRecord]) -> list[OutRecord]:
        receipts: list[Receipt] = []
        sources: list[InRecord] = []
        out: list[OutRecord] = []
        for rec in batch:
            try:
                receipts.append(decode_receipt(self.codec, rec.value))
            except DecodeError as exc:
                out.append(self._dead(rec, DeadLetter("decode", exc.reason, str(exc))))
                continue
            sources.append(rec)
        if not receipts:
            return out
        deliveries = await self.store.deliveries(sorted({receipt.provider_message_id for receipt in receipts}))
        found = plan(receipts, deliveries)
        marked = await self.store.mark_undeliverable(
            {channel: sorted(addresses) for channel, addresses in found.undeliverable.items()})
        await self.store.forget_recipients(sorted(set(marked)))

        for index, change in found.changes:
            out.append(encode_status(self.codec, self.status_topic, change.to_status_change(),
                                     sources[index].header(TRACE)))
            hard = change.reason is not None and change.reason.startswith("hard")
            self.metrics.stage_outcomes.labels("receipts", change.status, "hard_bounce" if hard else "").inc()
        now = now_ms()
        for unmatched in found.unmatched:
            rec = sources[unmatched.index]
            tries = int(rec.header(ATTEMPT) or 0)
            if unmatched.error_class in EARLY and tries < len(self.ladder.topics):
                # its delivery's mark or status row may simply not be written yet (common under campaign load):
                # look again after the tier's delay, and dead-letter only once the ladder is climbed
                out.append(self._later(rec, tries, now))
                self.metrics.stage_outcomes.labels("receipts", "retried", unmatched.error_class).inc()
                continue
            error = unmatched.error + (f" (after {tries} retries)" if tries else "")
            out.append(self._dead(rec, DeadLetter(STAGE, unmatched.error_class, error)))
            self.metrics.dead_letters.labels(STAGE, unmatched.error_class).inc()
        return out

    def _later(self, rec: InRecord, tries: int, now: int) -> OutRecord:
        headers = held_headers(rec.headers, now + int(self.ladder.delays[tries] * 1000), rec.topic, tries + 1)
        return OutRecord(self.ladder.topics[tries], rec.key, rec.value or b"", headers)

    def _dead(self, rec: InRecord, why: DeadLetter) -> OutRecord:
        return dead_letter(rec, why, self.dlq_topic, self.max_record_bytes)


def specs(settings: Settings) -> list[AgentSpec]:
    async def build(ctx: Context) -> ReceiptsHandler:
        return ReceiptsHandler(ctx.settings, ctx.codec, ctx.metrics, PostgresReceiptStore(ctx.db, ctx.redis, ctx.settings))

    return [AgentSpec("receipts", [settings.topic("receipts")], build)]
