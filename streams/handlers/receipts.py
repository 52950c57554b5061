"""The receipts agent: provider receipts → status changes; a hard bounce marks the address undeliverable.

Per batch: one query finds the deliveries behind all the batch's provider
message ids, one UPDATE per channel marks hard-bounced addresses, one Redis DEL
drops the affected users' cached recipients (so the route stage skips the
address from the next event on).
"""
from __future__ import annotations

from infra.settings import Settings
from schemas.codec import DecodeError
from streams.runtime.registry import AgentSpec
from streams.runtime.context import Context
from infra.kafka.dead_letters import DeadLetter, dead_letter
from infra.kafka.records import InRecord, OutRecord
from streams.stores.recipients import recipient_key
from streams.stages.receipts import DeliveryRow, plan
from streams.stages.status_change import status_record

LOOKUP = """
SELECT d.delivery_id, d.notification_id, d.channel, d.address, d.provider_message_id, n.user_id, n.event_id, n.event_type
FROM deliveries d LEFT JOIN notifications n ON n.id = d.notification_id
WHERE d.provider_message_id = ANY(%s)
"""
MARK = {
    "email": "UPDATE users SET email_undeliverable = true, updated_at = now()"
             " WHERE lower(email) = ANY(%s) AND NOT email_undeliverable RETURNING id",
    "sms": "UPDATE users SET phone_undeliverable = true, updated_at = now()"
           " WHERE phone = ANY(%s) AND NOT phone_undeliverable RETURNING id",
}
STAGE = "status"  # receipts are status tracking; the DLQ's stage names are shared with `herald dlq`


class ReceiptsHandler:
    name = "receipts"
    stage = STAGE

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def handle(self, batch: list[InRecord]) -> list[OutRecord]:
        s, codec, m = self.ctx.settings, self.ctx.codec, self.ctx.metrics
        dlq = s.topic("dlq")
        receipts: list[dict] = []
        sources: list[InRecord] = []
        out: list[OutRecord] = []
        for rec in batch:
            try:
                decoded = codec.decode(rec.value)
                if decoded.name != "Receipt":
                    raise DecodeError("wrong_type", f"expected Receipt, got {decoded.name}")
            except DecodeError as exc:
                out.append(dead_letter(rec, DeadLetter("decode", exc.reason, str(exc)), dlq, s.max_record_bytes))
                continue
            receipts.append(decoded.record)
            sources.append(rec)
        if not receipts:
            return out
        pmids = sorted({r["provider_message_id"] for r in receipts})
        async with self.ctx.db.connection() as conn:
            rows = await (await conn.execute(LOOKUP, (pmids,))).fetchall()
        deliveries: dict[str, list[DeliveryRow]] = {}
        for row in rows:
            deliveries.setdefault(row[4], []).append(DeliveryRow(*row))
        p = plan(receipts, deliveries)

        marked: list[str] = []
        to_mark = {ch: sorted(addrs) for ch, addrs in p.undeliverable.items() if addrs}
        if to_mark:
            async with self.ctx.db.connection() as conn:
                for channel, addresses in to_mark.items():
                    marked += [r[0] for r in await (await conn.execute(MARK[channel], (addresses,))).fetchall()]
        if marked:
            await self.ctx.redis.delete(*{recipient_key(s, uid) for uid in marked})

        status_topic = s.topic("status")
        for i, c in p.changes:
            out.append(status_record(
                codec, status_topic, notification_id=c.notification_id, event_id=c.event_id, user_id=c.user_id,
                status=c.status, event_type=c.event_type, channel=c.channel, reason=c.reason, delivery_id=c.delivery_id,
                provider_message_id=c.provider_message_id, trace_id=sources[i].header("herald-trace-id"), at_ms=c.at_ms,
            ))
            m.stage_outcomes.labels("receipts", c.status, "hard_bounce" if c.reason and c.reason.startswith("hard") else "").inc()
        for u in p.unmatched:
            out.append(dead_letter(sources[u.index], DeadLetter(STAGE, u.error_class, u.error), dlq, s.max_record_bytes))
            m.dead_letters.labels(STAGE, u.error_class).inc()
        return out


def specs(settings: Settings) -> list[AgentSpec]:
    async def build(ctx: Context) -> ReceiptsHandler:
        return ReceiptsHandler(ctx)

    return [AgentSpec("receipts", [settings.topic("receipts")], build)]
