"""The status agent: StatusChange records → PostgreSQL, in batches, never backwards."""
from __future__ import annotations

from collections import Counter

from infra.settings import Settings
from schemas.codec import DecodeError
from streams.runtime.registry import AgentSpec
from streams.runtime.context import Context
from infra.kafka.dead_letters import DeadLetter, dead_letter
from infra.kafka.records import InRecord, OutRecord
from streams.stages.status_fold import fold

UPSERT = """
INSERT INTO notifications AS n (id, event_id, event_type, user_id, template, category, campaign_id,
                                status, status_rank, reason, created_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (id) DO UPDATE SET
    status = EXCLUDED.status, status_rank = EXCLUDED.status_rank, reason = EXCLUDED.reason,
    updated_at = EXCLUDED.updated_at,
    template = COALESCE(n.template, EXCLUDED.template),
    category = COALESCE(n.category, EXCLUDED.category),
    campaign_id = COALESCE(n.campaign_id, EXCLUDED.campaign_id)
WHERE EXCLUDED.status_rank > n.status_rank
"""

COPY_HISTORY = (
    "COPY status_history (notification_id, channel, status, reason, delivery_id, provider_message_id, at) FROM STDIN"
)


class StatusHandler:
    name = "status"
    stage = "status"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def handle(self, batch: list[InRecord]) -> list[OutRecord]:
        changes, dead = [], []
        for rec in batch:
            try:
                decoded = self.ctx.codec.decode(rec.value)
                if decoded.name != "StatusChange":
                    raise DecodeError("wrong_type", f"expected StatusChange, got {decoded.name}")
                changes.append(decoded.record)
            except DecodeError as exc:
                dead.append(dead_letter(rec, DeadLetter("decode", exc.reason, str(exc)), self.ctx.settings.topic("dlq"),
                                            self.ctx.settings.max_record_bytes))
        history, updates = fold(changes)
        if history:
            # sorted so that concurrent writers lock rows in one order
            updates.sort(key=lambda u: u.id)
            async with self.ctx.db.connection() as conn:
                async with conn.transaction():
                    async with conn.cursor() as cur:
                        async with cur.copy(COPY_HISTORY) as copy:
                            for row in history:
                                await copy.write_row(row)
                        await cur.executemany(
                            UPSERT,
                            [
                                (u.id, u.event_id, u.event_type, u.user_id, u.template, u.category, u.campaign_id,
                                 u.status, u.rank, u.reason, u.at, u.at)
                                for u in updates
                            ],
                        )
        for (status, reason), n in Counter((c["status"], c["reason"] or "") for c in changes).items():
            self.ctx.metrics.stage_outcomes.labels("status", status, reason).inc(n)
        return dead


def specs(settings: Settings) -> list[AgentSpec]:
    async def build(ctx: Context) -> StatusHandler:
        return StatusHandler(ctx)

    return [AgentSpec("status", [settings.topic("status")], build)]
