"""The receipts agent: provider receipts → status changes; a hard bounce marks the address undeliverable.

Per batch: one lookup finds the deliveries behind all the batch's provider
message ids, one UPDATE per channel marks hard-bounced addresses, one Redis
round trip drops the affected users' cached recipients (so the route stage
skips the address from the next event on). The store is ``streams.stores.receipts``.
"""
from __future__ import annotations

from infra.kafka.dead_letters import DeadLetter, dead_letter
from infra.kafka.records import TRACE, InRecord, OutRecord
from infra.settings import Settings
from schemas.codec import Codec, DecodeError
from schemas.records import Receipt
from streams.metrics import Metrics
from streams.runtime.context import Context
from streams.runtime.registry import AgentSpec
from streams.stages.receipts import plan
from streams.stages.status_change import encode_status
from streams.stores.receipts import PostgresReceiptStore, ReceiptStore

STAGE = "status"  # receipts are status tracking; the DLQ's stage names are shared with `herald dlq`


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
        for unmatched in found.unmatched:
            out.append(self._dead(sources[unmatched.index], DeadLetter(STAGE, unmatched.error_class, unmatched.error)))
            self.metrics.dead_letters.labels(STAGE, unmatched.error_class).inc()
        return out

    def _dead(self, rec: InRecord, why: DeadLetter) -> OutRecord:
        return dead_letter(rec, why, self.dlq_topic, self.max_record_bytes)


def specs(settings: Settings) -> list[AgentSpec]:
    async def build(ctx: Context) -> ReceiptsHandler:
        return ReceiptsHandler(ctx.settings, ctx.codec, ctx.metrics, PostgresReceiptStore(ctx.db, ctx.redis, ctx.settings))

    return [AgentSpec("receipts", [settings.topic("receipts")], build)]
